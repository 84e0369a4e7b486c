"""Network Dissection (Bau et al. 2017) on the device: dissect(), the data format, the synthetic
dataset with known answers, and the report."""
from .data import Concept, FolderDataset, write_folder
from .dissect import dissect
from .result import DissectionResult
from .synthetic import PlantedNet, SyntheticShapes

__all__ = ["Concept", "DissectionResult", "FolderDataset", "PlantedNet", "SyntheticShapes", "dissect", "write_folder"]
