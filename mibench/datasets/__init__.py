"""Built-in datasets, registered through the ``mibench_datasets`` hook.

Only specs live here; the code that reads or generates images sits in the module each factory
string names, so that listing datasets imports neither scikit-image nor torch.
"""

from mibench.hookspecs import hookimpl
from mibench.specs import DatasetSpec, Param

SYNTHETIC = DatasetSpec(
    name="synthetic",
    description=(
        "Multimodal pairs with exact ground truth: a random crop of a real fundus or IHC "
        "histology image, and the same scene under a known random affine (or perspective) "
        "transform with a different intensity mapping (fundus) or stain channel (histology)."
    ),
    factory="mibench.datasets.synthetic:load_dataset",
    params=(
        Param("seed", 0, "random seed; pair k depends only on (seed, k)"),
        Param("pairs", 8, "number of pairs"),
        Param("size", 256, "side of the square fixed and moving images, in pixels"),
        Param("families", "fundus,histology",
              "comma-separated families (fundus, histology); pairs cycle through them"),
        Param("transform", "affine", "true transform model",
              choices=("affine", "perspective")),
        Param("difficulty", "medium",
              "size of the true transform (max rotation 5/10/20 deg, translation 3/6/10 %, "
              "scale 5/10/15 %, shear 0.03/0.06/0.1)", choices=("easy", "medium", "hard")),
        Param("landmarks", 12, "landmarks per pair"),
        Param("modality", "multimodal",
              "'none' keeps the fixed image's intensities in the moving image (a monomodal "
              "control)", choices=("multimodal", "none")),
    ),
    needs_data_dir=False,
    layout="generated in memory from scikit-image's retina() and immunohistochemistry()",
    source="ships with scikit-image; no download",
)


@hookimpl
def mibench_datasets():
    return [SYNTHETIC]
