"""Floor 3: governed fine-tune runs.

Belongs here: fine-tune run requests (base model, approved dataset versions, hyperparameters,
resource request), per-project GPU quotas, and the Celery tasks that re-check approval and train
with transformers, tracked in MLflow, registering the output as a new model version. It may use
``registry``, ``governance`` and the ledger; it never imports ``serving`` or the reports, and heavy
libraries (torch, transformers, MLflow) are imported only inside task code paths.
"""
