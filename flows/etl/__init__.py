"""A flow in a subpackage that imports its helpers relatively."""
