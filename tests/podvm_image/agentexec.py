"""Commands run inside the pod VM through the agent API, as ``kubectl exec`` reaches
kata-agent: ``ExecProcess``, then ``ReadStdout``/``ReadStderr`` until the stream ends, then
``WaitProcess``. Only the development agent started with ``--allow-exec`` runs them (the
image's development variant); it runs them in the VM itself, not in a container.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from google.protobuf import empty_pb2

from protocols.kata import agent_pb2, oci_pb2
from protocols.ttrpc import Client, TTRPCError

AGENT = "grpc.AgentService"
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Ran:
    status: int
    stdout: str
    stderr: str


async def _stream(client: Client, method: str, cid: str, eid: str, timeout: float) -> bytes:
    data = b""
    while True:
        try:
            reply = await client.call(
                AGENT, method, agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid,
                                                           len=65536),
                agent_pb2.ReadStreamResponse, timeout=timeout)
        except TTRPCError as exc:
            if exc.message == "read meet eof":
                return data
            raise
        data += reply.data


async def vm_exec(client: Client, cid: str, *args: str, timeout: float = 120.0) -> Ran:
    """Run ``args`` in the VM (by way of container ``cid``) and collect what it did."""
    eid = uuid.uuid4().hex
    process = oci_pb2.Process(Args=list(args), Env=[PATH], Cwd="/")
    await client.call(AGENT, "ExecProcess",
                      agent_pb2.ExecProcessRequest(container_id=cid, exec_id=eid,
                                                   process=process),
                      empty_pb2.Empty, timeout=timeout)
    stdout, stderr = await asyncio.gather(_stream(client, "ReadStdout", cid, eid, timeout),
                                          _stream(client, "ReadStderr", cid, eid, timeout))
    waited = await client.call(AGENT, "WaitProcess",
                               agent_pb2.WaitProcessRequest(container_id=cid, exec_id=eid),
                               agent_pb2.WaitProcessResponse, timeout=timeout)
    return Ran(waited.status, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


async def sh(client: Client, cid: str, script: str, timeout: float = 120.0) -> str:
    """``sh -c script`` in the VM; its stdout, or AssertionError when it failed."""
    ran = await vm_exec(client, cid, "sh", "-c", script, timeout=timeout)
    assert ran.status == 0, f"{script!r} exited {ran.status}: {ran.stderr}{ran.stdout}"
    return ran.stdout
