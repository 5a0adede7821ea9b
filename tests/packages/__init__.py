"""Tests of packfleet.packages: projects, archives and the package runner."""
