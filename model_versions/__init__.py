"""A model version's life, from training to the SageMaker Model Registry, and where each state lives.

- **trained**: a training run (``defect_classifier.pipeline``) exports a product's models, ``model.onnx``
  each; a build writes version 1, the untrained one (``model_versions.repository.BUILT_VERSION``).
- **evaluated**: the run's report, ``evaluation.json`` beside ``model.onnx`` (written by
  ``defect_classifier.evaluation``, read as ``model_versions.local.REPORT``).
- **registered**: the next numbered version folder of each model, all or nothing (``model_versions.local``).
- **approved**: its validation F1 beats the served version's, so ``version_policy`` points at it
  (``model_versions.local.approve``).
- **served**: the version a model's ``config.pbtxt`` serves, kept across rebuilds (``model_versions.repository``).
- **in the Model Registry**: a model package per local version, pending until a person approves or rejects
  it, on both sides at once (``model_versions.model_registry``; the package calls: ``model_versions.model_packages``).
"""
