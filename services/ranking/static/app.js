// Kaohe dashboard: province overview, prefecture and county pages, updated live over SSE.
// Plain JavaScript served by the ranking service: nothing is loaded from outside this machine.
"use strict";

const LEAGUES = { in_poverty: "未摘帽县 In poverty", exited: "已摘帽县 Exited" };
const COMPONENTS = {
  daily_management: "日常管理 Daily management", inspections: "督查 Inspections",
  rectification: "整改 Rectification", year_end: "年终考核 Year-end",
};
const CATEGORIES = {
  basic_work: "基础工作", assistance_measures: "帮扶措施", policy_implementation: "政策落实",
  project_implementation: "项目实施", stable_exit: "稳定脱贫", department_assistance: "部门帮扶",
};
const GRADES = { good: "好 good", fairly_good: "较好 fairly good", average: "一般 average", poor: "较差 poor" };
const grade = (g) => GRADES[g] || g;
const view = document.getElementById("view");
const yearSelect = document.getElementById("year");
const live = document.getElementById("live");
let regions = new Map();
let provinces = []; // the provinces the key sees: one (its own) or, with the national key, several
let stream = null;
let rerender = null;

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const name = (code) => (regions.get(code) || {}).name || code;
const provinceOf = (code) => code.slice(0, 2) + "0000";
const provinceLink = (code) => (provinces.length > 1 ? `#/province/${code}` : "#/");
const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2));

// The API key: from ?key= once (make run prints that link), then kept in this browser only.
const KEY_ITEM = "kaohe.key";
function apiKey() {
  const params = new URLSearchParams(location.search);
  if (params.get("key")) {
    localStorage.setItem(KEY_ITEM, params.get("key"));
    params.delete("key");
    history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}${location.hash}`);
  }
  return localStorage.getItem(KEY_ITEM);
}

function askForKey(message) {
  view.innerHTML = `<form id="key-form" class="card"><h2>API key</h2>
    <p class="muted">${esc(message)} 请输入 API key (standings:read, scores:read, events:read).</p>
    <input id="key-input" type="password" size="60" placeholder="kh_..." autocomplete="off">
    <button type="submit">OK</button></form>`;
  document.getElementById("key-form").onsubmit = (e) => {
    e.preventDefault();
    localStorage.setItem(KEY_ITEM, document.getElementById("key-input").value.trim());
    location.reload();
  };
}

class Unauthorized extends Error {}

async function getJSON(url) {
  const r = await fetch(url, { headers: { accept: "application/json", authorization: `Bearer ${apiKey()}` } });
  if (r.status === 401) throw new Unauthorized(`${url}: HTTP 401`);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

async function allStandings(params) {
  const items = [];
  let cursor = null;
  do {
    const q = new URLSearchParams({ ...params, limit: "100" });
    if (cursor) q.set("cursor", cursor);
    const page = await getJSON(`/v1/standings?${q}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

function movement(s) {
  if (s.movement === null || s.movement === undefined) return '<span class="muted">新 new</span>';
  if (s.movement > 0) return `<span class="up">▲${s.movement}</span>`;
  if (s.movement < 0) return `<span class="down">▼${-s.movement}</span>`;
  return '<span class="muted">–</span>';
}

function table(items, link, emptyText) {
  if (!items.length) return `<p class="muted">${esc(emptyText)}</p>`;
  const rows = items.map((s) => `<tr data-code="${s.region_code}">
      <td class="num">${s.rank}</td><td><a href="${link(s.region_code)}">${esc(s.name || name(s.region_code))}</a>
      <span class="muted">${s.region_code}</span></td><td class="num total">${fmt(s.total)}</td>
      <td>${esc(grade(s.grade))}</td><td class="num">${movement(s)}</td></tr>`).join("");
  return `<table><thead><tr><th class="num">名次 Rank</th><th>地区 Region</th><th class="num">得分 Score</th>
    <th>等次 Grade</th><th class="num">变化 Move</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function crumbs(parts) {
  if (provinces.length > 1) parts.unshift(["全国 All provinces", "#/"]);
  document.getElementById("crumbs").innerHTML = parts
    .map(([label, href]) => `<span>${href ? `<a href="${href}">${esc(label)}</a>` : esc(label)}</span>`).join("");
}

function national() {
  crumbs([]);
  const items = provinces.map((code) => `<li><a href="#/province/${code}">${esc(name(code))}</a>
    <span class="muted">${code}</span></li>`).join("");
  view.innerHTML = `<h1>全国 All provinces</h1><section class="card" id="provinces"><ul>${items}</ul></section>`;
}

async function province(code, year) {
  crumbs([[name(code), null]]);
  const [poor, exited, prefectures] = await Promise.all([
    allStandings({ region: code, level: "county", league: "in_poverty", year }),
    allStandings({ region: code, level: "county", league: "exited", year }),
    allStandings({ region: code, level: "prefecture", year }),
  ]);
  view.innerHTML = `<h1>${esc(name(code))} · ${year} 年度考核排名 Standings</h1>
    <div class="grid">
      <section class="card" id="league-in_poverty"><h2>${LEAGUES.in_poverty}</h2>${table(poor, (c) => `#/county/${c}`, "暂无 none yet")}</section>
      <section class="card" id="league-exited"><h2>${LEAGUES.exited}</h2>${table(exited, (c) => `#/county/${c}`, "暂无 none yet")}</section>
      <section class="card" id="prefectures"><h2>市(州) Prefectures</h2>${table(prefectures, (c) => `#/prefecture/${c}`, "暂无 none yet")}</section>
    </div>`;
}

async function prefecture(code, year) {
  crumbs([[name(provinceOf(code)), provinceLink(provinceOf(code))], [name(code), null]]);
  const [poor, exited, placements] = await Promise.all([
    allStandings({ region: code, level: "county", league: "in_poverty", year }),
    allStandings({ region: code, level: "county", league: "exited", year }),
    getJSON(`/v1/standings/${code}?year=${year}`),
  ]);
  const own = placements.find((p) => p.level === "prefecture");
  view.innerHTML = `<h1>${esc(name(code))} <span class="muted">${code}</span></h1>
    ${own ? `<p>全省第 <b id="prefecture-rank">${own.rank}</b> / ${own.of} 名 · rank ${own.rank} of ${own.of} prefectures · 得分 ${fmt(own.total)} · ${esc(grade(own.grade))}</p>` : ""}
    <div class="grid">
      <section class="card" id="league-in_poverty"><h2>${LEAGUES.in_poverty}</h2>${table(poor, (c) => `#/county/${c}`, "本联赛暂无县 no county in this league")}</section>
      <section class="card" id="league-exited"><h2>${LEAGUES.exited}</h2>${table(exited, (c) => `#/county/${c}`, "本联赛暂无县 no county in this league")}</section>
    </div>`;
}

function chart(points) {
  if (points.length < 1) return '<p class="muted">暂无历史 no history yet</p>';
  const w = 600, h = 200, pad = 30;
  const times = points.map((p) => Date.parse(p.at));
  const t0 = Math.min(...times), t1 = Math.max(...times) || t0 + 1;
  const totals = points.map((p) => p.total);
  const lo = Math.max(0, Math.floor(Math.min(...totals) - 2)), hi = Math.min(100, Math.ceil(Math.max(...totals) + 2));
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - 2 * pad);
  const y = (v) => h - pad - ((v - lo) / Math.max(1, hi - lo)) * (h - 2 * pad);
  const d = points.map((p, i) => `${i ? "L" : "M"}${x(times[i]).toFixed(1)},${y(p.total).toFixed(1)}`).join(" ");
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="score over time">
    <line x1="${pad}" y1="${y(hi)}" x2="${w - pad}" y2="${y(hi)}"/><line x1="${pad}" y1="${y(lo)}" x2="${w - pad}" y2="${y(lo)}"/>
    <text x="2" y="${y(hi) + 3}">${hi}</text><text x="2" y="${y(lo) + 3}">${lo}</text>
    <text x="${pad}" y="${h - 8}">${new Date(t0).toLocaleDateString("zh-CN")}</text>
    <text x="${w - pad - 60}" y="${h - 8}">${new Date(t1).toLocaleDateString("zh-CN")}</text>
    <path d="${d}"/></svg>`;
}

function findingsTable(page) {
  if (!page || page.unavailable) return `<p class="muted">不可用 unavailable ${esc(page && page.unavailable)}</p>`;
  if (!page.items.length) return '<p class="muted">无 none</p>';
  return `<table><thead><tr><th>问题 Finding</th><th>类别 Category</th><th>严重 Severity</th><th>期限 Deadline</th><th class="num">逾期天数 Days over</th></tr></thead><tbody>${
    page.items.map((f) => `<tr><td>${esc(f.finding_id)}<br><span class="muted">${esc(f.description)}</span></td>
      <td>${esc(CATEGORIES[f.category] || f.category)}</td><td>${esc(f.severity)}</td><td>${esc(f.deadline)}</td>
      <td class="num">${f.days_overdue || ""}</td></tr>`).join("")}</tbody></table>`;
}

async function county(code, year) {
  const parent = code.slice(0, 4) + "00";
  crumbs([[name(provinceOf(code)), provinceLink(provinceOf(code))], [name(parent), `#/prefecture/${parent}`],
    [name(code), null]]);
  const [placements, history, detail] = await Promise.all([
    getJSON(`/v1/standings/${code}?year=${year}`),
    getJSON(`/v1/standings/${code}/history?year=${year}`),
    getJSON(`/v1/dashboard/county/${code}?year=${year}`),
  ]);
  const score = detail.score && !detail.score.unavailable ? detail.score : null;
  const provinceLine = history.filter((h) => h.scope === provinceOf(code) && h.rank !== null);
  const comps = score ? Object.entries(COMPONENTS).map(([k, label]) => {
    const v = score.components[k];
    return `<div><span>${label}</span><span class="bar"><span style="width:${v ?? 0}%"></span></span><span class="num">${fmt(v)}</span></div>`;
  }).join("") : "";
  const lines = detail.explanation && detail.explanation.items ? detail.explanation.items : [];
  view.innerHTML = `<h1>${esc(name(code))} <span class="muted">${code}</span></h1>
    <div class="grid">
      <section class="card"><h2>得分 Score</h2>${score ? `<div class="big" id="county-total">${fmt(score.total)}</div>
        <p><span class="pill">${esc(grade(score.grade))}</span> ${score.gated ? "（存在未整改重大问题，等次封顶 grade capped）" : ""}
        · ${esc(LEAGUES[score.league] || score.league)} · 政策 ${esc(score.policy_version)}</p>` : '<p class="muted">暂无得分 not scored yet</p>'}
        <table id="placements"><thead><tr><th>范围 Scope</th><th class="num">名次 Rank</th><th class="num">变化 Move</th></tr></thead><tbody>${
          placements.map((p) => `<tr><td>${esc(p.scope_name || p.scope)} · ${esc(LEAGUES[p.league] || p.league)}</td>
            <td class="num rank">${p.rank} / ${p.of}</td><td class="num">${movement(p)}</td></tr>`).join("")}</tbody></table></section>
      <section class="card"><h2>分项 Components</h2><div class="bars">${comps}</div></section>
      <section class="card"><h2>得分走势 Score over time (全省排名 province scope)</h2>${chart(provinceLine)}</section>
    </div>
    <div class="grid" style="margin-top:1rem">
      <section class="card"><h2>逾期整改 Overdue rectifications</h2>${findingsTable(detail.overdue_findings)}</section>
      <section class="card"><h2>未整改 Open rectifications</h2>${findingsTable(detail.open_findings)}</section>
      <section class="card"><h2>扣分明细 Explanation</h2>${lines.length ? `<table><thead><tr><th>分项 Component</th><th class="num">分值 Points</th><th>规则 Rule</th><th>原因 Cause</th></tr></thead><tbody>${
        lines.map((l) => `<tr><td>${esc(COMPONENTS[l.component] || l.component)}</td><td class="num">${fmt(l.points)}</td>
          <td>${esc(l.rule)}</td><td class="muted">${esc(l.cause.slice(0, 18))}</td></tr>`).join("")}</tbody></table>` : '<p class="muted">无 none</p>'}</section>
    </div>`;
}

function route() {
  const year = yearSelect.value;
  const [, kind, code] = (location.hash || "#/").slice(1).split("/");
  if (kind === "prefecture" && /^\d{6}$/.test(code)) return { scope: code, render: () => prefecture(code, year) };
  if (kind === "county" && /^\d{6}$/.test(code)) return { scope: code, render: () => county(code, year) };
  if (kind === "province" && provinces.includes(code)) return { scope: code, render: () => province(code, year) };
  if (provinces.length === 1) return { scope: provinces[0], render: () => province(provinces[0], year) };
  return { scope: null, render: async () => national() }; // nothing ranked across provinces: no stream
}

function listen(scope) {
  if (stream) stream.close();
  stream = null;
  if (!scope) return live.classList.remove("on");
  const q = new URLSearchParams({ region: scope, access_token: apiKey() });
  const source = new EventSource(`/v1/standings/stream?${q}`);
  stream = source;
  source.onopen = () => live.classList.add("on");
  source.onerror = () => {
    live.classList.remove("on");
    // CLOSED: the reconnect was refused (a 401 once the key is revoked or expired; else e.g. a 503)
    if (source.readyState === EventSource.CLOSED && stream === source) streamRefused(scope);
  };
  source.addEventListener("end", (e) => {
    // the server ends the stream when the key stops letting it in: do not reconnect just to be refused
    source.close();
    live.classList.remove("on");
    if (stream !== source) return;
    stream = null;
    const problem = JSON.parse(e.data);
    if (problem.status === 401) return askForKey("密钥已吊销或过期 The key was revoked or has expired.");
    view.insertAdjacentHTML("afterbegin", `<p class="down">实时更新已停止 live updates stopped: ${esc(problem.detail)}</p>`);
  });
  let pending = null;
  source.addEventListener("standing", (e) => {
    const change = JSON.parse(e.data);
    if (String(change.year) !== yearSelect.value) return;
    clearTimeout(pending); // many changes arrive together: render once
    pending = setTimeout(async () => {
      await show(false);
      const row = view.querySelector(`tr[data-code="${change.region_code}"]`);
      if (row) row.classList.add("flash");
    }, 150);
  });
}

async function streamRefused(scope) {
  stream = null;
  try {
    await getJSON("/v1/regions"); // the key still works: the refusal was something else, try again later
    setTimeout(() => { if (!stream && route().scope === scope) listen(scope); }, 10000);
  } catch (err) {
    if (err instanceof Unauthorized) askForKey("密钥已吊销或过期 The key was revoked or has expired.");
  }
}

async function show(resubscribe = true) {
  const r = route();
  try {
    await r.render();
  } catch (err) {
    if (err instanceof Unauthorized) return askForKey("密钥无效 The key was refused.");
    view.innerHTML = `<p class="down">加载失败 failed to load: ${esc(err.message)}</p>`;
  }
  if (resubscribe) listen(r.scope);
}

async function start() {
  if (!apiKey()) return askForKey("需要密钥 A key is needed.");
  const thisYear = Number(new Intl.DateTimeFormat("en", { timeZone: "Asia/Shanghai", year: "numeric" }).format(new Date()));
  const wanted = new URLSearchParams(location.search).get("year") || String(thisYear);
  for (let y = thisYear + 1; y >= 2016; y--) yearSelect.add(new Option(`${y}`, `${y}`, false, `${y}` === wanted));
  if (!yearSelect.value || yearSelect.value !== wanted) yearSelect.add(new Option(wanted, wanted, true, true));
  try {
    (await getJSON("/v1/regions")).forEach((r) => regions.set(r.code, r));
    provinces = [...regions.values()].filter((r) => r.level === "province").map((r) => r.code).sort();
  } catch (err) {
    if (err instanceof Unauthorized) return askForKey("密钥无效 The key was refused.");
    throw err;
  }
  yearSelect.onchange = () => show(false);
  window.onhashchange = () => show(true);
  await show(true);
}

start();
