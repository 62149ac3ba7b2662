"""Evaluation: the baselines (`eval.baselines`) and the run that ranks the model, its ablations and
the baselines on the same samples (`eval.run`). It sits on top of the model code and imports
nothing into this package namespace, so `import interestgeo.eval.baselines` stays torch-free."""
