"""Side-by-side benchmarks against the tools users would otherwise pick.

Run from a checkout: ``python -m benchmarks all`` or one part
(``python -m benchmarks matching|engine|http|scaling``). Each part prints a table
of ratios against peers measured in the same run and writes JSON to
``benchmarks/results/<part>.json``.
"""
