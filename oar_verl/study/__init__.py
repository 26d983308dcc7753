"""The controlled study: does OAR train better than GRPO? (CPU, through verl's trainer)

    python -m oar_verl.study                    # the full study (about 2 hours on 2 cores)
    python -m oar_verl.study --smoke --out DIR  # a few steps, one seed (CI)

A byte-level Qwen2 warm-started on imperfect arithmetic traces is trained with verl's v1
trainer on the CPU backend, with the same budget, by GRPO, OAR-G, OAR-P and a control
(OAR-G's weights permuted within each response), over several seeds; held-out accuracy,
step time and entropy are collected, attribution fidelity (OAR-G against OAR-P) is
measured on the warm-started model, and `docs/results.md` with its plots is written.

Modules: `plan` (what is run), `fidelity` (OAR-G vs OAR-P rank agreement), `runner`
(runs and collects), `report` (plots and the results page).
"""
