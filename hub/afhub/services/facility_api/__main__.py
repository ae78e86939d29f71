from afhub.services.facility_api.app import main

main()
