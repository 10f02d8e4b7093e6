"""Evaluation on video benchmarks: adapters (`benchmarks/`), scoring, the resumable runner and reports.

Entry points: `runner.run_eval` (`videor1 eval`), `runner.rescore` (`videor1 score`),
`runner.evaluate_records` (in-process, model already loaded), `report.compare_runs` (`videor1 eval report`).
"""
