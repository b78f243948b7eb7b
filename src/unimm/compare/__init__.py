"""`unimm compare`: recipes trained at one budget (time, tokens or FLOPs) over several seeds,
evaluated alike, and reported with intervals that say which differences are real.

    budget.py   the budget syntax and the train.* settings it becomes
    plan.py     what a compare runs, checked before anything is written (OUT/plan.json)
    run.py      one (recipe, seed) run: train, evaluate, curve points, samples, result.json
    runner.py   runs them in worker processes, resumes, prints progress and the ETA
    stats.py    Student-t intervals over seeds, separated or not
    report.py   compare.json and report.md; figures.py its plot and sample grid
    command.py  the command-line parser
"""
