"""The paper studies: one room per paper, sharing `common.py`.

A study is a library function that takes a spec and returns rows; tables and
plots are functions of the rows; `sniptf.commands` parse flags and call them.
The core (`sniptf/*.py`) never imports this wing.
"""
