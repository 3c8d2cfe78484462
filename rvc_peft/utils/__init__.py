"""The bottom layer: small helpers every other subpackage may use (imports nothing else from rvc_peft).

`files`: atomic writes, claiming output names, disk-full errors. `hub`: "local path or Hub reference" resolution.
"""
