"""The USSD protocol: the path walker, session rows, PIN entry and the screens' shared context.
Screens turn the wallet's typed results into text; the wallet never imports this package."""
