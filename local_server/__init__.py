"""Start a real tritonserver (the binary in the nvidia-pytriton wheel) on a model repository."""
from local_server.errors import ServerError
from local_server.sagemaker_container import sagemaker_arguments
from local_server.server import TritonServer

__all__ = ["ServerError", "TritonServer", "sagemaker_arguments"]
