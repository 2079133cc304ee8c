"""`make demo`: the offline end-to-end pipeline (dataset, train, evaluate, report) on two behaviours."""
