from .grpo import main

raise SystemExit(main())
