"""Start a real tritonserver (the binary in the nvidia-pytriton wheel) on a model repository."""
from local_server.server import ServerError, TritonServer, sagemaker_arguments

__all__ = ["ServerError", "TritonServer", "sagemaker_arguments"]
