from churn.cli import main

main()
