"""samscope FiftyOne plugin: SAM masks (automatic and prompted), evaluation and mask-quality
review in the FiftyOne App.

This folder is both the installed package ``samscope_fiftyone`` and a FiftyOne plugin folder
(``fiftyone.yml`` + this file). ``samscope fiftyone-install`` links or copies it into
FiftyOne's plugins directory; FiftyOne then loads this file under a module name of its own and
calls `register`. Everything else is imported from the installed package by its absolute
name, so the plugin works the same from a link, a copy or a source checkout, as long as
samscope is installed in the environment that runs FiftyOne.
"""


def register(p) -> None:
    """Register the operators and panels with FiftyOne's plugin context `p`.

    Raises ImportError with the fix when samscope is not installed in FiftyOne's environment.
    """
    try:
        from samscope_fiftyone.operators import (
            AutomaticMasks,
            EvaluateMasks,
            ExportReviewed,
            ImportLabels,
            PromptedMasks,
            RateMask,
            RefineMasks,
        )
        from samscope_fiftyone.panels import MaskReviewPanel, QualityReportPanel
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("samscope_fiftyone", "sam_core"):
            raise  # samscope is there, something it needs is not: that error says what
        raise ImportError(
            "the samscope FiftyOne plugin needs the samscope package in the Python environment "
            "that runs FiftyOne (the App server, delegated runs): pip install 'samscope[fiftyone]'"
        ) from exc

    for operator in (
        PromptedMasks,
        AutomaticMasks,
        EvaluateMasks,
        RateMask,
        RefineMasks,
        ExportReviewed,
        ImportLabels,
    ):
        p.register(operator)
    p.register(MaskReviewPanel)
    p.register(QualityReportPanel)
