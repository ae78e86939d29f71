from afhub.services.fitting.app import main
from afhub.services.kit.lifecycle import exit_process

main()
exit_process(0)  # stopped cleanly (its pool and stores closed): no slow tear-down of torch
