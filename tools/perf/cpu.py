"""The CPU record of every results file here: :mod:`fgclip_model.machine` (the same record ``stage2`` and
``benchmark`` write into their ``results.json``)."""

from fgclip_model.machine import class_text, cpu_line, cpu_record, effective_class, hardware_class

__all__ = ["class_text", "cpu_line", "cpu_record", "effective_class", "hardware_class"]
