from afhub.services.fitting.app import main

main()
