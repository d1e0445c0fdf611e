"""The public API: `cd.__all__` sorted and complete, experiment packages loaded lazily."""

from __future__ import annotations

import re
import subprocess
import sys
import types

import constrained_diffusion as cd

REQUIRED = {
    # the roles
    "Denoiser", "Constraint", "Solver", "Correction", "ConstrainedSampler",
    # every solver
    "InexactNewton", "GradientDescent", "ExactJVP", "ExactNewton", "IdentityDirection",
    "SecantNewton",
    # every built-in constraint
    "LinearConstraint", "NonlinearConstraint", "Inpainting", "SuperResolution", "ClassGuidance", "PSLDConstraint",
    "DecodedConstraint", "EncodedConstraint", "latent_inpainting",
    "Composite",  # constraints that add up
    # every adapter
    "GaussianDenoiser", "NetworkDenoiser", "MNISTDenoiser", "StableDiffusionDenoiser", "FlowMatchDenoiser", "SD3Denoiser",
    "FluxDenoiser",
    # the corrections
    "InnerLoop", "PostStep", "X0Edit", "TimeTravel", "AdaptiveStop",
    # subpackages
    "constraints", "denoisers", "solvers", "sampling", "recipes", "models", "linalg",
}


def test_all_is_sorted_complete_and_resolves():
    assert cd.__all__ == sorted(cd.__all__)
    assert REQUIRED <= set(cd.__all__), REQUIRED - set(cd.__all__)
    for name in cd.__all__:  # each name is the object its own module defines, under that name
        obj = getattr(cd, name)
        if isinstance(obj, types.ModuleType):
            assert obj.__name__ == f"constrained_diffusion.{name}", name
        elif name == "__version__":
            assert re.fullmatch(r"\d+\.\d+\.\d+", obj), obj
        else:
            assert obj.__name__ == name and obj.__module__.startswith("constrained_diffusion."), (name, obj)
            assert getattr(sys.modules[obj.__module__], name) is obj, name
    # every registered solver class is exported at the top level
    for name in cd.solvers.names():
        assert cd.solvers.solver_class(name).__name__ in cd.__all__


def test_experiment_packages_load_lazily():
    code = ("import sys, constrained_diffusion as cd; "
            "lazy = ['analysis', 'benchmarks', 'evaluation', 'training']; "
            "print([m for m in lazy if f'constrained_diffusion.{m}' in sys.modules]); "
            "cd.analysis; print('constrained_diffusion.analysis' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"
