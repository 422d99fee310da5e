"""Independent ports of the official loss code, written from reading it (not copied), single
process, float64-friendly. Each module names the repository and file it follows. They import
nothing from ``transfer``: the tests compare the package against them."""
