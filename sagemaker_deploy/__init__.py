"""Host the repository on SageMaker: package, deploy, invoke, roll out, async LaMa, tear down."""
