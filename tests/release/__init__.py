"""What a release ships besides the code: locks, the wheel and sdist, the dashboards and alert
rules, checked the way a packager or an operator would."""
