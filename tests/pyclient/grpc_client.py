"""Calls berth's CRI socket with gRPC's Python package (gRPC C-core, as the
C++ clients monitoring agents use), which sends the socket's path,
percent-encoded, as :authority. Stubs are generated from berth's own
api.proto with grpcio-tools' protoc into a temporary directory.

Usage: grpc_client.py <socket> <api.proto dir> <image ref>
Prints JSON: {"<call>": "ok: ..." or "error: CODE details", ...}.
"""
import json
import sys
import tempfile

import grpc
from grpc_tools import protoc

socket, proto_dir, image = sys.argv[1:4]
out = tempfile.mkdtemp(prefix="berth-pygrpc-")
rc = protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out,
                  "--grpc_python_out=" + out, "runtime/v1/api.proto"])
if rc != 0:
    sys.exit("protoc failed")
sys.path.insert(0, out)
from runtime.v1 import api_pb2 as api, api_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel("unix://" + socket)
runtime = rpc.RuntimeServiceStub(channel)
images = rpc.ImageServiceStub(channel)
calls = {
    "Version": lambda: runtime.Version(api.VersionRequest()).runtime_name,
    "Status": lambda: [c.type for c in runtime.Status(api.StatusRequest()).status.conditions],
    "RuntimeConfig": lambda: runtime.RuntimeConfig(api.RuntimeConfigRequest()).linux.cgroup_driver,
    "ListPodSandbox": lambda: len(runtime.ListPodSandbox(api.ListPodSandboxRequest()).items),
    "ListContainers": lambda: len(runtime.ListContainers(api.ListContainersRequest()).containers),
    "PullImage": lambda: images.PullImage(api.PullImageRequest(image=api.ImageSpec(image=image))).image_ref,
    "ListImages": lambda: len(images.ListImages(api.ListImagesRequest()).images),
    "ImageFsInfo": lambda: len(images.ImageFsInfo(api.ImageFsInfoRequest()).image_filesystems),
    "ContainerStatus(unknown)": lambda: runtime.ContainerStatus(
        api.ContainerStatusRequest(container_id="nosuchcontainer")),
}
result = {}
for name, call in calls.items():
    try:
        result[name] = "ok: " + str(call())
    except grpc.RpcError as e:
        result[name] = "error: %s %s" % (e.code().name, e.details())
print(json.dumps(result))
