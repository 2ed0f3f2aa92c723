"""Python-backend runners for the ``cpu`` target.

Each runner is copied into a model's version folder as ``model.py`` (with ``batching.py``
beside it) and executes the same artifact the native backend would serve on a GPU.
"""
