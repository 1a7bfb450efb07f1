"""Kata protobufs: sources in ``protos/``, generated modules beside this file.

``hypervisor_pb2`` (hypervisor.Hypervisor), ``podvminfo_pb2`` (podvminfo.PodVMInfo),
``agent_pb2`` (grpc.AgentService), ``health_pb2`` (grpc.Health), ``oci_pb2``, ``types_pb2``,
``csi_pb2`` and ``status_pb2`` (google.rpc.Status). Regenerate with ``scripts/gen-protos``;
tests/protocols/test_kata_protos.py fails when the committed modules are stale.
"""
