"""The evaluation harness: leave-one-out split, metrics, baselines, the evaluation run and its report."""
