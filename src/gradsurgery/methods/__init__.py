"""Multi-task methods: the aggregation interface, the registry and every registered method.

Importing this package registers all methods, so ``create_method(name)`` finds them.
"""

from gradsurgery.methods.aligned_mtl import AlignedMTL
from gradsurgery.methods.auxiliary import AuxiliaryGradientSimilarity
from gradsurgery.methods.base import (
    Aggregation,
    GramianWeighting,
    JacobianAggregator,
    LossWeighting,
    Method,
    TaskStep,
    refuse_without_epoch_boundaries,
)
from gradsurgery.methods.cagrad import CAGrad
from gradsurgery.methods.config import ConFIG
from gradsurgery.methods.constant import Constant
from gradsurgery.methods.cosine_regularization import CosineRegularization
from gradsurgery.methods.db_mtl import DBMTL
from gradsurgery.methods.dualproj import DualProj
from gradsurgery.methods.dwa import DynamicWeightAverage
from gradsurgery.methods.fairgrad import FairGrad
from gradsurgery.methods.famo import FAMO
from gradsurgery.methods.gls import GLS
from gradsurgery.methods.graddrop import GradDrop
from gradsurgery.methods.gradnorm import GradNorm
from gradsurgery.methods.gradvac import GradVac
from gradsurgery.methods.imtl import IMTL, IMTLG, IMTLL
from gradsurgery.methods.krum import Krum
from gradsurgery.methods.mgda import MGDA
from gradsurgery.methods.moco import MoCo
from gradsurgery.methods.modo import MoDo
from gradsurgery.methods.nash_mtl import NashMTL
from gradsurgery.methods.pcgrad import PCGrad
from gradsurgery.methods.random_weighting import Random
from gradsurgery.methods.registry import (
    MethodInfo,
    create_method,
    method_info,
    method_names,
    register,
)
from gradsurgery.methods.rlw import RLW
from gradsurgery.methods.sdmgrad import SDMGrad
from gradsurgery.methods.stch import STCH
from gradsurgery.methods.trimmed_mean import TrimmedMean
from gradsurgery.methods.uncertainty import UncertaintyWeighting
from gradsurgery.methods.unitary import Mean, Sum
from gradsurgery.methods.upgrad import UPGrad

__all__ = [
    "DBMTL",
    "FAMO",
    "GLS",
    "IMTL",
    "IMTLG",
    "IMTLL",
    "MGDA",
    "RLW",
    "STCH",
    "Aggregation",
    "AlignedMTL",
    "AuxiliaryGradientSimilarity",
    "CAGrad",
    "ConFIG",
    "Constant",
    "CosineRegularization",
    "DualProj",
    "DynamicWeightAverage",
    "FairGrad",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GramianWeighting",
    "JacobianAggregator",
    "Krum",
    "LossWeighting",
    "Mean",
    "Method",
    "MethodInfo",
    "MoCo",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "Random",
    "SDMGrad",
    "Sum",
    "TaskStep",
    "TrimmedMean",
    "UPGrad",
    "UncertaintyWeighting",
    "create_method",
    "method_info",
    "method_names",
    "refuse_without_epoch_boundaries",
    "register",
]
