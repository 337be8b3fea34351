"""Kaohe services: contracts (events), plumbing (kit) and one package per service."""
