"""The public ops, one module per kernel stem; ``dlgpu.functional`` gathers them.

``dlgpu/ops/<stem>.py`` holds the stem's public ops (validate, then call the
backend) and the stem's part of the :class:`dlgpu.backend.Backend` protocol;
:mod:`dlgpu.ops.validate` holds the checks they share.
"""
