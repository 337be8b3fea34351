"""The domain's enumerations (BRIEF §3): the names partners send and services store."""

from enum import StrEnum


class InspectionMode(StrEnum):
    unannounced = "unannounced"  # 暗访
    announced = "announced"  # 明察
    stationed = "stationed"  # 蹲点督导
    spot_check = "spot_check"  # 随机抽查
    third_party = "third_party"  # 第三方评估
    self_assessment = "self_assessment"  # 自评


class FindingCategory(StrEnum):
    """The six shortfalls of seed 004 (六个不够精准、不够到位)."""

    basic_work = "basic_work"  # 基础工作
    assistance_measures = "assistance_measures"  # 帮扶措施
    policy_implementation = "policy_implementation"  # 政策落实
    project_implementation = "project_implementation"  # 项目实施
    stable_exit = "stable_exit"  # 稳定脱贫
    department_assistance = "department_assistance"  # 部门帮扶


class Indicator(StrEnum):
    # household: 两不愁 (food, clothing), 三保障 (education, medical, housing), 三有
    food = "food"
    clothing = "clothing"
    education = "education"
    medical = "medical"
    housing = "housing"
    water = "water"
    electricity = "electricity"
    broadcast = "broadcast"
    # village: 五有, and the incidence rule (must be < 3%)
    collective_economy = "collective_economy"
    road = "road"
    clinic = "clinic"
    cultural_room = "cultural_room"
    network = "network"
    poverty_incidence = "poverty_incidence"
    # records: 建档立卡
    registry_accuracy = "registry_accuracy"


class Severity(StrEnum):
    minor = "minor"
    major = "major"
    critical = "critical"


class DailyCheckKind(StrEnum):
    registry_accuracy = "registry_accuracy"  # 建档立卡 accuracy
    team_presence = "team_presence"  # 驻村工作队 / 第一书记 present ("五个一")
    work_log = "work_log"  # 工作日志


class CountyStatus(StrEnum):
    in_poverty = "in_poverty"  # 贫困县
    exited = "exited"  # 已摘帽县: ranked in their own league


class RegionLevel(StrEnum):
    province = "province"
    prefecture = "prefecture"
    county = "county"


# what a finding's indicator is about (registry_accuracy: the records, neither)
HOUSEHOLD_INDICATORS = frozenset({Indicator.food, Indicator.clothing, Indicator.education, Indicator.medical,
                                  Indicator.housing, Indicator.water, Indicator.electricity, Indicator.broadcast})
VILLAGE_INDICATORS = frozenset({Indicator.collective_economy, Indicator.road, Indicator.clinic,
                                Indicator.cultural_room, Indicator.network, Indicator.poverty_incidence})
