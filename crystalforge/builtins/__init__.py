"""The built-in plugins: thin hook implementations registering crystalforge's defaults.

Heavy components are registered as lazy ``"module:attr"`` paths so that listing plugins
does not import torch or pymatgen.
"""
