"""Built-in datasets, registered through the ``mibench_datasets`` hook.

Only specs live here; the code that reads or generates images sits in the module each factory
string names, so that listing datasets imports neither scikit-image nor torch. Each option
declares its bounds and choices here, and the factories leave checking them to
:meth:`mibench.specs.PluginSpec.resolve`; a factory raises :class:`ValueError` for bad data
(a missing file, a malformed table), which the harness reports as ``dataset 'NAME': ...``.
"""

from mibench.hookspecs import hookimpl
from mibench.specs import DatasetSpec, Param, Requirement

SYNTHETIC = DatasetSpec(
    name="synthetic",
    description=(
        "Multimodal pairs with exact ground truth: a random crop of a real fundus or IHC "
        "histology image, and the same scene under a known random affine (or perspective, "
        "rigid, or elastic: affine then a smooth B-spline displacement) transform with a "
        "different intensity mapping (fundus) or stain channel (histology)."
    ),
    factory="mibench.datasets.synthetic:load_dataset",
    params=(
        Param("seed", 0, "random seed; pair k depends only on (seed, k)", ge=0),
        Param("pairs", 8, "number of pairs", ge=1),
        Param("size", 256, "side of the square fixed and moving images, in pixels", ge=32),
        Param("families", "fundus,histology",
              "comma-separated families (fundus, histology); pairs cycle through them"),
        Param("transform", "affine", "true transform model; rigid = rotation and translation "
              "only, up to 10/20/30 deg and 5/10/20 % of the size by difficulty; elastic = the "
              "affine one, then a random cubic B-spline displacement (elastic_amplitude, "
              "elastic_spacing)", choices=("affine", "perspective", "rigid", "elastic")),
        Param("difficulty", "medium",
              "size of the true transform (max rotation 5/10/20 deg, translation 3/6/10 %, "
              "scale 5/10/15 %, shear 0.03/0.06/0.1)", choices=("easy", "medium", "hard")),
        Param("landmarks", 12, "landmarks per pair", ge=1),
        Param("modality", "multimodal",
              "'none' keeps the fixed image's intensities in the moving image (a monomodal "
              "control)", choices=("multimodal", "none")),
        Param("elastic_amplitude", 10.0, "transform=elastic: largest displacement of a "
              "B-spline control point per component, px (< elastic_spacing / 4: no folding)",
              ge=0),
        Param("elastic_spacing", 48.0, "transform=elastic: control-point spacing of the "
              "random B-spline, px", gt=0),
    ),
    # Added after task keys were recorded: left out of the resolved options unless given.
    quiet=("elastic_amplitude", "elastic_spacing"),
    needs_data_dir=False,
    layout="generated in memory from scikit-image's retina() and immunohistochemistry()",
    source="ships with scikit-image; no download",
)

_CHANNELS = Param("channels", "grey", "what methods see of colour images: luma or RGB",
                  choices=("grey", "rgb"))
_WORKING_SCALE = Param("working_scale", 1.0,
                       "resize images and landmarks by this factor in (0, 1] before "
                       "registration; errors stay in the table's pixels", gt=0, le=1)
_BIRL_SCALE = Param("scale", 0, "read the images from the scale-<P>pc folders instead of those "
                    "the table names (0: as in the table); landmarks are rescaled", ge=0)

FIRE = DatasetSpec(
    name="fire",
    description=(
        "FIRE fundus pairs (134 pairs, 2912 x 2912, categories S/P/A) with 10 control points "
        "each; P37 left out by default (wrong ground truth); errors in native pixels."
    ),
    factory="mibench.datasets.fire:load_dataset",
    params=(
        Param("categories", "S,P,A", "comma list of the categories to use (S, P, A)"),
        Param("include_p37", False, "keep pair P37, whose ground truth is known to be wrong"),
        Param("scale", 0.25, "working scale in (0, 1]: methods see images and landmarks "
              "resized by it (0.25: 728 px); errors are reported in native 2912-px pixels",
              gt=0, le=1),
        Param("channels", "green", "what methods see of the colour photographs",
              choices=("green", "grey", "rgb")),
        Param("mask", "fov", "mask given to the methods: Masks/mask.png (fov), "
              "Masks/feature_mask.png (feature) or none", choices=("fov", "feature", "none")),
    ),
    layout=(
        "DIR/Images/<C><NN>_1.jpg (fixed) and <C><NN>_2.jpg (moving), C in S/P/A; "
        "DIR/Ground Truth/control_points_<C><NN>_1_2.txt (lines 'x_ref y_ref x_test y_test', "
        "full resolution); DIR/Masks/mask.png, DIR/Masks/feature_mask.png (DIR may also be the "
        "parent of FIRE/)"
    ),
    source="https://projects.ics.forth.gr/cvrl/fire/ (FIRE.zip, free for research)",
    protocol="fire",
)

COVER = DatasetSpec(
    name="cover",
    description=(
        "Your own pairs from a BIRL-style cover table: target = fixed, source = moving; "
        "landmarks as ,X,Y CSV, .pts or x y text; scored as ANHIR scores its tables (rTRE)."
    ),
    factory="mibench.datasets.cover:load_dataset",
    params=(
        Param("table", "", "the cover table CSV (absolute, from the current directory, or "
              "inside --data-dir)", type=str),
        _BIRL_SCALE,
        _WORKING_SCALE,
        _CHANNELS,
    ),
    layout=(
        "a CSV with columns 'Target image', 'Source image', 'Target landmarks', 'Source "
        "landmarks' (paths relative to --data-dir; an empty Target landmarks cell: registered, "
        "not scored); give it with -o table=PATH"
    ),
    source="your own data (BIRL's format: https://github.com/Borda/BIRL)",
    # BIRL's cover tables are ANHIR's format, and BIRL scores them as ANHIR does (rTRE).
    protocol="anhir",
)

ANHIR = DatasetSpec(
    name="anhir",
    description=(
        "ANHIR histology pairs (481 pairs, 8 tissues) from its cover table; evaluation pairs "
        "without target landmarks are registered and written out, not scored."
    ),
    factory="mibench.datasets.anhir:load_dataset",
    params=(
        Param("table", "dataset_medium.csv", "the ANHIR cover table (absolute, from the "
              "current directory, or inside --data-dir)"),
        Param("status", "all", "which pairs to use by the table's status column",
              choices=("all", "training", "evaluation")),
        _BIRL_SCALE,
        _WORKING_SCALE,
        _CHANNELS,
    ),
    layout=(
        "DIR/<tissue>_<k>/scale-<P>pc/<name>.jpg|png with <name>.csv landmarks (,X,Y) beside "
        "each image, and the cover table (default DIR/dataset_medium.csv: an index column, "
        "Target image, Source image, Target landmarks, Source landmarks, status, ...)"
    ),
    source="https://anhir.grand-challenge.org/Data/ (registration required)",
    protocol="anhir",
)

NIFTI = DatasetSpec(
    name="nifti",
    description=(
        "NIfTI volumes (e.g. MRI T1/T2) listed in a CSV manifest, read with nibabel: whole "
        "volumes with their affine (errors in voxels and mm), or one 2-D slice of each "
        "(mode=slice: pixel (x, y) is voxel (row y, column x) of the numpy slice)."
    ),
    factory="mibench.datasets.nifti:load_dataset",
    params=(
        Param("manifest", "manifest.csv", "the CSV manifest (absolute, from the current "
              "directory, or inside --data-dir)"),
        Param("mode", "volume", "volume: whole volumes, numpy (D, H, W) = nibabel (k, j, i), "
              "with the NIfTI affine (RAS+ mm); slice: one 2-D slice of each volume, affine "
              "ignored", choices=("volume", "slice")),
        Param("landmarks_space", "voxel", "what 3-column landmark files hold: voxel indices "
              "i j k (0-based) or world x y z (RAS+ mm, mapped through each image's affine)",
              choices=("voxel", "world")),
        Param("axis", 2, "mode=slice: voxel axis the slice is taken across", choices=(0, 1, 2)),
        Param("index", -1, "mode=slice: slice index along the axis; -1 for the middle slice",
              ge=-1),
        Param("slab", 0.5, "mode=slice: 3-D landmarks within this many voxels of the fixed "
              "slice are used", ge=0),
        Param("working_scale", 1.0, "mode=slice: resize slices and landmarks by this factor "
              "in (0, 1] before registration; errors stay in the table's pixels", gt=0, le=1),
    ),
    layout=(
        "a CSV manifest (default DIR/manifest.csv) with columns fixed, moving (.nii or .nii.gz "
        "paths relative to --data-dir) and optionally fixed_landmarks, moving_landmarks (x,y,z "
        "voxels i j k or RAS+ mm by landmarks_space; x y pixels of a slice), fixed_mask, "
        "moving_mask, id"
    ),
    source="your own data (any NIfTI-1/2 files nibabel reads)",
)

BRAIN = DatasetSpec(
    name="brain",
    description=(
        "3-D multimodal brain pairs with exact ground truth: the MNI152 T1 template and a T2- "
        "or PD-like volume synthesised from its tissue maps (bias field, Rician noise) under a "
        "known random rigid or affine transform; errors in voxels and mm."
    ),
    factory="mibench.datasets.brain:load_dataset",
    params=(
        Param("seed", 0, "random seed; pair k depends only on (seed, k)", ge=0),
        Param("pairs", 4, "number of pairs", ge=1),
        Param("resolution", 2, "voxel size of the template in mm (2: 99 x 117 x 95 voxels)",
              choices=(1, 2)),
        Param("contrasts", "t2,pd", "comma list of moving contrasts (t2, pd; t1 for a "
              "monomodal control); pairs cycle through them"),
        Param("transform", "affine", "true transform model", choices=("rigid", "affine")),
        Param("difficulty", "medium", "size of the true transform (max rotation 5/10/20 deg "
              "about each axis, translation 5/10/20 mm, scale 5/10/15 %, shear 0.03/0.06/0.1)",
              choices=("easy", "medium", "hard")),
        Param("landmarks", 20, "landmarks per pair (3-D Harris corners of the T1 template)",
              ge=1),
        Param("noise", 0.02, "standard deviation of the Rician noise of the moving image",
              ge=0, le=0.5),
        Param("mask", "fov", "masks: the field of view, or the brain mask",
              choices=("fov", "brain")),
    ),
    requires=(Requirement(module="nilearn", hint='pip install "mibench[volumes]"'),),
    needs_data_dir=False,
    layout="generated in memory from the MNI152 template files inside nilearn's package",
    source="ships with nilearn (pip install 'mibench[volumes]'); no download",
)


@hookimpl
def mibench_datasets():
    return [SYNTHETIC, FIRE, ANHIR, COVER, NIFTI, BRAIN]
