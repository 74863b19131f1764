"""Post-training diagnostics (`noa diagnose`): the guide's alignment report, rollout quality
against the CNO's own noise, and a report directory with plots."""

from noa.diagnostics.report import DiagnosticsResult, add_diagnose_arguments, diagnose, run_diagnose

__all__ = ["DiagnosticsResult", "add_diagnose_arguments", "diagnose", "run_diagnose"]
