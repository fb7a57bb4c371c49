"""samscope FiftyOne plugin: SAM masks (automatic and prompted), evaluation and mask-quality
review in the FiftyOne App. FiftyOne loads this file from the plugin folder and calls
`register`; the package is also importable as ``fiftyone_plugin``.
"""


def register(p) -> None:
    """Register the operators and panels with FiftyOne's plugin context `p`."""
    from fiftyone_plugin.operators import AutomaticMasks, EvaluateMasks, PromptedMasks, RateMask
    from fiftyone_plugin.panels import MaskReviewPanel, QualityReportPanel

    for operator in (PromptedMasks, AutomaticMasks, EvaluateMasks, RateMask):
        p.register(operator)
    p.register(MaskReviewPanel)
    p.register(QualityReportPanel)
