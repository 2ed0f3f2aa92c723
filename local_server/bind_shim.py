"""Keep tritonserver's SageMaker frontend on the address the user chose.

Triton 2.51 has ``--http-address``, ``--grpc-address`` and ``--metrics-address``, but its
SageMaker frontend has no address option: it always binds 0.0.0.0 (``sagemaker_address_``
is fixed in src/command_line_parser.h). A tiny ``LD_PRELOAD`` library, given only to the
tritonserver process (and the backend stubs it starts), turns a bind() to the wildcard
address into a bind() to the chosen one. It is compiled once per virtual environment
with the system C compiler, the way the backend directory is assembled once.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from local_server.errors import ServerError

# The variable the library reads the chosen IPv4 address from.
ADDRESS_VARIABLE = "LOCAL_SERVER_BIND_ADDRESS"
SHIM_PATH = Path(sys.prefix) / "var" / "bind-shim" / "bind_to_chosen_address.so"

SHIM_SOURCE = r"""
/* bind() to the wildcard address -> bind() to $LOCAL_SERVER_BIND_ADDRESS (IPv4).
 * Exists because tritonserver's SageMaker frontend has no address option and binds
 * 0.0.0.0; every other bind() passes through unchanged. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    const char *chosen = getenv("LOCAL_SERVER_BIND_ADDRESS");
    struct in_addr target;
    if (addr == NULL || chosen == NULL || inet_pton(AF_INET, chosen, &target) != 1)
        return real_bind(fd, addr, len);
    if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in v4 = *(const struct sockaddr_in *)addr;
        if (v4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            v4.sin_addr = target;
            return real_bind(fd, (const struct sockaddr *)&v4, sizeof v4);
        }
    }
    if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 v6 = *(const struct sockaddr_in6 *)addr;
        if (IN6_IS_ADDR_UNSPECIFIED(&v6.sin6_addr)) {  /* :: -> ::ffff:<chosen> */
            memset(v6.sin6_addr.s6_addr, 0, 10);
            memset(v6.sin6_addr.s6_addr + 10, 0xff, 2);
            memcpy(v6.sin6_addr.s6_addr + 12, &target, 4);
            return real_bind(fd, (const struct sockaddr *)&v6, sizeof v6);
        }
    }
    return real_bind(fd, addr, len);
}
"""


def bind_shim() -> Path:
    """The compiled library, built on first use."""
    if SHIM_PATH.exists():
        return SHIM_PATH
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ServerError("keeping the SageMaker routes off the network needs a C compiler to build a "
                          "one-function bind() shim once, and none was found: install one "
                          "(apt-get install gcc), or serve on every interface with --address 0.0.0.0")
    SHIM_PATH.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SHIM_PATH.parent) as work:
        source, built = Path(work) / "shim.c", Path(work) / SHIM_PATH.name
        source.write_text(SHIM_SOURCE)
        result = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(source), "-ldl"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ServerError(f"building the bind() shim with {compiler} failed:\n{result.stderr}")
        built.replace(SHIM_PATH)  # atomic: a concurrent start sees the whole library or none
    return SHIM_PATH
