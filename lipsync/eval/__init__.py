"""Lip-sync evaluation: LSE-D / LSE-C (syncnet_python's SyncNet, both published protocols) and FID."""
from lipsync.eval.evaluate import EvalConfig, Evaluator, cached_sync_scorer
from lipsync.eval.report import EvaluationReport, VideoScore, write_report

__all__ = ["EvalConfig", "EvaluationReport", "Evaluator", "VideoScore", "cached_sync_scorer", "write_report"]
