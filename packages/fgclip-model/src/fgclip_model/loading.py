"""Strict checkpoint loading shared by the fgclip model classes."""

from __future__ import annotations


class StrictLoadingMixin:
    """``from_pretrained`` that fails on missing or mis-shaped weights (``strict=True``, the default).

    transformers would otherwise initialise a missing tensor at random and only log a warning. Keys listed in
    ``_keys_to_ignore_on_load_missing`` stay optional (they are initialised as documented by the model).
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict: bool = True, **kwargs):
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except RuntimeError as err:
            if "ignore_mismatched_sizes" not in str(err):
                raise
            raise ValueError(
                f"{pretrained_model_name_or_path} holds weights whose shapes do not fit {cls.__name__} with its "
                "config.json (the loading report above names them)"
            ) from err
        problems = []
        if info.get("missing_keys"):
            problems.append(f"missing: {sorted(info['missing_keys'])}")
        if info.get("mismatched_keys"):
            problems.append(f"mis-shaped: {sorted(info['mismatched_keys'])}")
        if strict and problems:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a complete {cls.__name__} checkpoint ("
                + "; ".join(problems)
                + "). Pass strict=False to initialise them instead."
            )
        return (model, info) if want_info else model
