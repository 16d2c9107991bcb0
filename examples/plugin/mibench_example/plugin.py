"""The plugin module named by the entry point: only specs, no heavy imports.

Each factory is a ``"module:function"`` string, imported only when the plugin is used, so that
``mibench list`` stays fast.

Each option is declared once, here: its default, its type and the bounds or choices the code
needs. mibench checks a value against them before any work is done and passes every declared
option to the factory, so the factories take them as keyword arguments without defaults and do
not check them again; they check only what a ``Param`` cannot say (a condition between two
options, the input images) and raise ``ValueError`` for it.

The estimator is also a registration method, ``example-cr``, with no code here: mibench derives
one from every estimator (gradient engine here, as it is differentiable; see "Every estimator
registers images" in mibench's docs/plugins.md). ``derive_method=False`` would opt out.
"""

from mibench import DatasetSpec, EstimatorSpec, MethodSpec, Param, hookimpl


@hookimpl
def mibench_estimators():
    return [EstimatorSpec(
        name="example-cr",
        description="Correlation ratio eta^2 of the moving image given the binned fixed image "
        "(0 = unrelated, 1 = the moving intensity is a function of the fixed one)",
        factory="mibench_example.estimator:correlation_ratio",
        params=(Param("bins", 32, "bins of the fixed intensities", ge=1),),
        higher_is_better=True,
        differentiable=True,
    )]


@hookimpl
def mibench_methods():
    return [MethodSpec(
        name="example-shift",
        description="Translation by phase correlation (Hann window, sub-pixel peak), on the "
        "images or on their gradient magnitudes",
        factory="mibench_example.method:register",
        params=(Param("use_gradient", True, "correlate gradient magnitudes (works across "
                      "intensity inversions) instead of intensities"),),
    )]


@hookimpl
def mibench_datasets():
    return [DatasetSpec(
        name="example-shapes",
        description="Procedural ellipses under a known random translation; the moving image "
        "optionally has inverted intensities; landmarks at the ellipse centres",
        factory="mibench_example.dataset:load",
        params=(
            Param("pairs", 4, "number of pairs", ge=1),
            Param("size", 96, "side of the square images (px)", ge=16),
            Param("shapes", 6, "ellipses per image (and landmarks per pair)", ge=1),
            Param("max_shift", 8.0, "largest translation along each axis (px)", ge=0),
            Param("invert", True, "moving intensity = 1 - fixed intensity (multimodal)"),
            Param("seed", 0, "random seed; pair k depends only on (seed, k)", ge=0),
        ),
        needs_data_dir=False,
        layout="generated in memory",
        source="procedural; no download",
    )]
