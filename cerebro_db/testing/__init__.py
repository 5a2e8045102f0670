"""Test harnesses: fault injection, the checks of a finished workload, throwaway clusters.

The runtime (CLI, scheduler, installer, backends) never imports this package.
"""
