"""The probe agent: plan, schedule, durable spool, upload."""

from __future__ import annotations

from .plan import Plan, PlanError, load_plan
from .run import Agent, AgentStats
from .spool import Spool, SpoolError

__all__ = ["Agent", "AgentStats", "Plan", "PlanError", "Spool", "SpoolError", "load_plan"]
