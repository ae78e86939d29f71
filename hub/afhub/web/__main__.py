from afhub.web.app import main

main()
