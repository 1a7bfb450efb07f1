"""``process-user-data``: provision a pod VM's files from user-data and initdata.

At boot the pod VM finds its user-data (the ``cidata`` config drive, or the instance metadata
service of Azure, AWS, GCP or Alibaba Cloud), writes the allowed ``write_files`` entries under
``/run/peerpod``, extracts ``aa.toml``, ``cdh.toml`` and ``policy.rego`` from initdata, writes
the initdata digest and extends TPM PCR 8 with it.

Modules: ``config`` (settings), ``detect`` and ``sources`` (where user-data comes from),
``safefs`` (confined atomic writes), ``initdata``, ``tpm``, ``provision`` (the whole step).
The package imports nothing eagerly, so ``process-user-data --help`` stays quick.
"""
