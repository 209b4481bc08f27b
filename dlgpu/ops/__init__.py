"""The public ops, one module per kernel stem; ``dlgpu.functional`` gathers them.

``dlgpu/ops/<stem>.py`` holds the stem's public ops: each validates its call
(with the shared checks of :mod:`dlgpu.ops.validate`) and calls the
:class:`dlgpu.backend.Backend` that its arrays select.
"""
