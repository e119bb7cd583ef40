"""Every text a customer sees, in English and Swahili, with the same keys.

Screens must fit 160 GSM-7 characters: tests format every key with its longest values and check.
`t(lang, key, **values)` formats a message; numbers are passed as ints and shown with commas.
"""

from __future__ import annotations

from helpers.infra import identity_texts
from helpers.infra.i18n_save import SAVE_EN, SAVE_SW
from helpers.infra.chama_texts import CHAMA_EN, CHAMA_SW

LANGUAGES = ("en", "sw")
LANGUAGE_NAMES = {"en": "English", "sw": "Kiswahili"}

EN: dict[str, str] = {
    # onboarding
    "pin.create": "Welcome to SatsPesa, your Bitcoin wallet.\nCreate a {digits}-digit PIN:",
    "pin.repeat": "Enter the same PIN again:",
    "pin.mismatch": "PINs did not match.",
    "pin.set": "PIN set.",
    # main menu
    "main": (
        "Balance: {balance} sats\n1 Send BTC\n2 Receive BTC\n3 Send Invoice\n"
        "4 Top Up M-Pesa\n5 Withdraw M-Pesa\n6 My Account{requests}\n8 Pay\n9 Save\n0 Exit"
    ),
    "main.requests": "\n7 Pay requests ({count})",
    "exit": "Thank you for using SatsPesa. Goodbye.",
    # send
    "send.phone": "Enter recipient phone number or Lightning address:",
    "send.phone-recent": "Send to:{lines}\nor enter a phone number or Lightning address:",
    "send.recent-line": "\n{n} {payee}",
    "send.amount": "Send to {phone}\nEnter amount in sats ({min}-{max})\nor 1 to enter KES",
    "send.kes": "Send to {phone}\nEnter amount in KES ({min}-{max}):",
    "send.confirm-kes": "Send {amount} sats ({kes} KES) to {phone}{recipient}\nFee: {fee} sats\nRate valid {valid} min\n1 Confirm\n0 Cancel",
    "send.confirm": "Send {amount} sats to {phone}{recipient}\nFee: {fee} sats\nTotal: {total} sats\n1 Confirm\n0 Cancel",
    "send.done": "Sent {amount} sats to {phone}. Fee {fee} sats. Ref {ref}. Balance: {balance} sats.",
    "send.ln.amount": "Pay {payee}\nAmount in sats ({min}-{max}):",
    "send.ln.confirm": "Pay {amount} sats to {payee}\nFee up to {fee} sats\nTotal up to {total} sats\n1 Confirm\n0 Cancel",
    "lnsend.done": "Paid {amount} sats to {payee}. Fee {fee} sats. Ref {ref}. Balance: {balance} sats.",
    "lnsend.failed": "The Lightning payment failed. Your sats were returned. Ref {ref}.",
    "lnsend.pending": "Paying {amount} sats to {payee}. Ref {ref}. We will SMS you the result.",
    "lnsend.nothing-sent": "Nothing was sent.",
    "lnsend.already-paid": "This invoice is already paid. Nothing was sent.",
    "lnurl.unreachable": "Could not reach that address. Try later.",
    "lnurl.bad-answer": "That address gave an invalid answer.",
    "lnurl.refused": "That address refused the payment.",
    "lnurl.name-required": "That address needs a verified name: verify your ID first.",
    "lnurl.bad-invoice": "That address sent an unusable invoice.",
    # receive
    "receive.amount": "Receive by Lightning\nAddress: {address}\nor enter amount in sats ({min}-{max}):",
    "receive.done": "Invoice for {amount} sats created, ref {ref}. We sent it to you by SMS. Valid {minutes} min.",
    # request payment
    "request.phone": "Request payment\nEnter the payer's phone number:",
    "request.amount": "Request from {phone}\nEnter amount in sats ({min}-{max}):",
    "request.done": "Payment request for {amount} sats sent to {phone} by SMS. Ref {ref}.",
    # pay a request
    "payreq.list": "Payment requests:{lines}\n0 Back",
    "payreq.line": "\n{n} {amount} sats to {phone}",
    "payreq.confirm": "Pay {amount} sats to {phone}\nRef {ref}\nFee: {fee} sats\n1 Confirm\n0 Cancel",
    "payreq.done": "Paid {amount} sats to {phone}. Ref {ref}. Balance: {balance} sats.",
    "payreq.gone": "This request is no longer open.",
    # pay a business with M-Pesa
    "mpesapay": "Pay\n1 Buy Goods (till)\n2 Pay Bill\n3 Airtime\n0 Back",
    "mpesapay.till": "Enter the till number:",
    "mpesapay.recent": "Paid before:{lines}\n{prompt}",
    "mpesapay.paybill": "Enter the paybill number:",
    "mpesapay.account": "Paybill {party}\nEnter the account number:",
    "mpesapay.amount": "Pay {payee}\nEnter amount in KES ({min}-{max}):",
    "mpesapay.pin": "Pay {kes} KES to {payee}\nCost: {sats} sats + fee {fee}, rate valid {valid} min\nEnter PIN:\n9 Forgot PIN",
    "mpesapay.done": "Paid {kes} KES to {payee}. M-Pesa ref {code}. Cost {sats} sats + fee {fee}. Balance: {balance} sats.",
    "mpesapay.pending": "Payment of {kes} KES to {payee} is being processed. Ref {ref}. We will SMS you.",
    "error.shortcode": "A till or paybill number is 5 to 7 digits.",
    # airtime
    "airtime": "Buy airtime for\n1 My number {phone}\n2 Another number\n0 Back",
    "airtime.phone": "Enter the phone number:",
    "airtime.recent": "Bought for before:{lines}\nor enter a phone number:",
    "airtime.amount": "Airtime for {phone}\nEnter amount in KES ({min}-{max}):",
    "airtime.pin": "Airtime {kes} KES for {phone}\nCost: {sats} sats + fee {fee}, rate valid {valid} min\nEnter PIN:\n9 Forgot PIN",
    "airtime.done": "Airtime {kes} KES sent to {phone}. Cost {sats} sats + fee {fee}. Ref {ref}. Balance: {balance} sats.",
    "airtime.pending": "Airtime {kes} KES for {phone} is on its way. Ref {ref}. We will SMS you.",
    "airtime.failed": "The airtime could not be sent. Your sats were returned. Ref {ref}.",
    "airtime.off": "Airtime is not available right now. Nothing was moved.",
    "error.account": "An account number is 1 to 13 letters or digits.",
    # top up
    "topup.amount": "Top up with M-Pesa\nEnter amount in KES ({min}-{max}):",
    "topup.code": "Pay {kes} KES by M-Pesa, then enter the M-Pesa confirmation code:",
    "topup.confirm": "Top up {kes} KES = {sats} sats\nRate valid {valid} min\nM-Pesa code: {code}\n1 Confirm\n0 Cancel",
    "topup.done": "Top-up received: {sats} sats for {kes} KES. Code {code}. Balance: {balance} sats.",
    "topup.push": "Top up {kes} KES = {sats} sats\nRate valid {valid} min\nM-Pesa will ask for your M-Pesa PIN on {phone}\n1 Confirm\n0 Cancel",
    "topup.push-sent": "Watch your phone: enter your M-Pesa PIN in the M-Pesa prompt to pay {kes} KES. Ref {ref}. We will SMS you when the {sats} sats arrive.",
    "topup.push-failed": "M-Pesa could not send the payment prompt. Nothing was charged. Please try again later.",
    # withdraw
    "withdraw.amount": "Withdraw to M-Pesa\nEnter amount in KES ({min}-{max}):",
    "withdraw.phone": "Withdraw {kes} KES\nEnter M-Pesa number or\n1 My number {phone}",
    "withdraw.phone-other": "Withdraw {kes} KES\nEnter M-Pesa number (Safaricom):",
    "withdraw.pin": "Withdraw {kes} KES to {phone}\nCost: {sats} sats + fee {fee}, rate valid {valid} min\nEnter PIN:\n9 Forgot PIN",
    "price.unavailable": "Prices are unavailable right now, so KES payments are paused. Sats payments still work. Please try again later.",
    "quote.renewed": "The price changed: {kes} KES = {sats} sats now.",
    "quote.expired": "The price you saw has expired. Nothing was moved. Please dial again.",
    "withdraw.done": "Sent {kes} KES to {phone}. M-Pesa ref {code}. Cost {sats} sats + fee {fee}. Balance: {balance} sats.",
    "withdraw.pending": "Withdrawal of {kes} KES to {phone} is being processed. Ref {ref}. We will SMS you.",
    "withdraw.failed": "The M-Pesa payout failed. Your sats were returned. Ref {ref}.",
    # account
    "account": (
        "Balance: {balance} sats{kes}\n{address}\n"
        "1 Statement\n2 Language\n3 PIN\n4 Name\n5 Limits\n6 Orders\n0 Back"
    ),
    "account.kes": " (about {kes} KES)",
    "account.kes-age": " (KES {kes}, {age} min old)",
    "history": "Last transactions:{lines}\n0 Back",
    "history.line": "\n{sign}{amount} {who} {date} {ref}",
    "history.empty": "\nNone yet.",
    "language": "Choose language:\n1 English\n2 Kiswahili\n0 Back",
    "language.done": "Language set to English.",
    "name.set": "Your name, as people who send to you will see it{now}:\n0 Back",
    "name.now": " (now {name})",
    "name.done": "Your name is {name}. People who send to you see: {shown}",
    "name.fixed": "Your name {name} is verified and cannot be changed here. Call customer care to correct it.",
    "error.name": "A name is 2 to 30 letters and spaces.",
    "recipient.name": "\nName: {name}",
    "recipient.new": "\nNot on SatsPesa yet: they get an SMS to claim.",
    "recipient.unnamed": "\nOn SatsPesa, no name given.",
    "pinchange.old": "Enter your current PIN:\n9 Forgot PIN",
    "pinchange.new": "Enter your new {digits}-digit PIN:",
    "pinchange.repeat": "Enter the new PIN again:",
    "pinchange.done": "Your PIN has been changed.",
    # Forgot PIN and SIM swaps (issue 33)
    "forgot": "Forgot PIN?\nWe will reset your PIN in {hours} hours. Money out is paused until then; entering your current PIN cancels it.\n1 Confirm\n0 Back",
    "forgot.done": "PIN reset requested. In {hours} hours dial {code} to set a new PIN. Until then, entering your current PIN cancels it.",
    "forgot.pending": "Your PIN reset is under way: {hours} h left. Then dial {code} to set a new PIN.",
    "reset.pending": "Your PIN reset is under way ({hours} h left), so money out is paused.\nTo cancel the reset, enter your current PIN:\n0 Back",
    "reset.cancelled": "PIN reset cancelled. Your PIN stays the same.",
    "reset.cancelled-pay": "PIN reset cancelled. Your PIN stays the same. Nothing was sent: dial again to pay.",
    "reset.gone": "Your PIN reset was already finished or cancelled in another session. Nothing was sent. Please dial again.",
    "reset.new": "Your PIN reset is due.\nCreate your new {digits}-digit PIN:",
    "forgot.off": "To reset a forgotten PIN, please call customer care with your ID.",
    "simswap.hold": "For your safety, sending and PIN changes are paused: this SIM card was changed lately. Call customer care with your ID. Receiving works.",
    "aml.hold": "Sending and withdrawing from this account are paused for a review. Please call customer care with your ID. Receiving works.",
    "simswap.unknown": "We could not check your SIM card just now, so payments above {max} sats wait. Try a smaller amount or try later.",
    "simswap.retry": "We could not check your SIM card just now. Please try again in a few minutes.",
    # shared prompts and refusals
    "pin.enter": "Enter your PIN to confirm:\n9 Forgot PIN",
    "pin.wrong": "Wrong PIN. {left} attempt(s) left.",
    "pin.locked": "Too many wrong PINs. Money actions are locked for {minutes} min. Try again later.",
    "pin.format": "PIN must be {digits} digits.",
    "deny.weak-pin": "That PIN is too easy to guess.",
    "deny.below-minimum": "Too low. Minimum {min} {unit}.",
    "deny.above-maximum": "Too high. Maximum {max} {unit}.",
    "deny.insufficient-balance": "Insufficient balance: you have {balance} sats.",
    "deny.daily-limit": "Daily limit of {limit} sats reached.",
    "deny.below-payee-minimum": "The recipient accepts at least {min} sats.",
    "deny.above-payee-maximum": "The recipient accepts at most {max} sats.",
    "error.option": "Invalid choice.",
    "error.amount": "Enter a whole number.",
    "error.phone": "Invalid phone number.",
    "error.address": "Invalid Lightning address.",
    "error.own-phone": "That is your own number.",
    "error.code": "Invalid M-Pesa code.",
    "error.code-used": "That M-Pesa code was already used.",
    "error.mpesa-phone": "M-Pesa needs a Safaricom number.",
    "error.expired": "This session has ended. Please dial again.",
    "error.dialled-past": "That code goes past a step you must confirm. Dial {code} and follow the menu.",
    "pin.not-in-dial": "For your safety, never put your PIN in the code you dial. Dial {code} and type your PIN only when asked.",
    "error.unavailable": "Service unavailable. Please try again in a few minutes.",
    "error.lightning": "Lightning is unavailable right now. Please try again later.",
    "error.too-many": "Too many requests. Please try again later.",
    "replay": "Done already. Ref {ref}.",
    "resume.gone": "That payment can no longer be continued: it was finished or is under way. Check your SMS, then dial again.",
    "resume": "Continue where you stopped?\n{what}\n1 Continue\n2 Start over",
    "help": " Help: {phone}",
    # who is on the other side of a statement line, when it is not another customer
    "who.lightning": "Lightning",
    "who.mpesa": "M-Pesa",
    "who.adjust": "Credit",
    "who.opening": "Opening",
    "who.airtime": "Airtime",
    # SMS
    "sms.welcome": "Welcome to SatsPesa! Dial {code} to use your Bitcoin wallet: send, receive, top up and withdraw with M-Pesa. Add your name in My Account.",
    "left.today": "You can send {left} sats more today.",
    "sms.new-recipient": "{phone} sent you {amount} sats on SatsPesa. Dial {code} and create a PIN by {date} to use them, or they go back.",
    "sms.unclaimed-returned": "SatsPesa: {phone} did not claim your {amount} sats in {days} days; they are back. Ref {ref}. Balance {balance} sats.",
    "sms.unclaimed-gone": "SatsPesa: {amount} sats from {phone} went back to them: no PIN was created in {days} days. Ref {ref}.",
    "sms.sent": "SatsPesa: you sent {amount} sats to {phone}. Fee {fee} sats. Ref {ref}. Balance {balance} sats.",
    "sms.received": "SatsPesa: you received {amount} sats from {phone}. Ref {ref}. Balance {balance} sats.",
    "sms.lightning-failed": "SatsPesa: your payment of {amount} sats to {phone} failed. Your sats were returned. Ref {ref}. Balance {balance} sats.",
    "sms.invoice": "SatsPesa invoice for {amount} sats, ref {ref}. Pay with any Lightning wallet: {bolt11}",
    "sms.invoice-paid": "SatsPesa: invoice {ref} was paid. You received {amount} sats. Balance {balance} sats.",
    "sms.request": "{phone} asks you to pay {amount} sats (ref {ref}). Dial {code} to pay from SatsPesa, or pay by Lightning: {bolt11}",
    "sms.request-user": "{phone} asks you to pay {amount} sats (ref {ref}). Dial {code} and choose Pay requests.",
    "sms.topup": "SatsPesa: top-up of {kes} KES received, code {code}. You got {sats} sats. Balance {balance} sats.",
    "sms.topup-failed": "SatsPesa: your M-Pesa top-up of {kes} KES did not go through (cancelled or failed). No sats were credited. Ref {ref}.",
    "sms.withdraw": "SatsPesa: {kes} KES sent to {phone} by M-Pesa, ref {code}. Cost {sats} sats + fee {fee}. Balance {balance} sats.",
    "sms.airtime": "SatsPesa: airtime of {kes} KES sent to {phone}, ref {ref}. Cost {sats} sats + fee {fee}. Balance {balance} sats.",
    "sms.airtime-failed": "SatsPesa: airtime of {kes} KES for {phone} could not be sent. {sats} sats returned. Ref {ref}. Balance {balance} sats.",
    "sms.pin-locked": "SatsPesa: wrong PIN entered too many times. Money actions are locked for {minutes} min.",
    "sms.pin-changed": "SatsPesa: your PIN was changed. If this was not you, call customer care.",
    "sms.adjusted": "SatsPesa: customer care credited you {amount} sats. Balance {balance} sats.",
    "sms.debited": "SatsPesa: customer care debited {amount} sats from you. Balance {balance} sats.",
    "sms.pin-reset": "SatsPesa: customer care reset your PIN. Dial the service code to create a new one. If you did not ask for this, call customer care now.",
    "sms.sim-swap-hold": "SatsPesa: your SIM card was changed, so sending and PIN changes are paused. Not you, or to unlock: call customer care with your ID.",
    "sms.sim-swap-cleared": "SatsPesa: customer care checked your ID after your SIM change. Sending money works again.",
    "sms.pin-reset-requested": "SatsPesa: you asked to reset your PIN. In {hours} hours dial {code} to set a new one. Not you? Dial {code} and enter your PIN to cancel.",
    "sms.pin-reset-cancelled": "SatsPesa: your PIN reset was cancelled because your current PIN was entered. Your PIN stays the same.",
    "sms.pin-reset-ready": "SatsPesa: your PIN was reset. Dial {code} to set a new PIN.",
    "sms.pin-reset-stopped": "SatsPesa: your PIN reset was stopped because this number's SIM card was changed. Call customer care with your ID.",
}

SW: dict[str, str] = {
    "pin.create": "Karibu SatsPesa, pochi yako ya Bitcoin.\nUnda PIN ya tarakimu {digits}:",
    "pin.repeat": "Weka PIN hiyo tena:",
    "pin.mismatch": "PIN hazikulingana.",
    "pin.set": "PIN imewekwa.",
    "main": (
        "Salio: {balance} sats\n1 Tuma BTC\n2 Pokea BTC\n3 Tuma Ankara\n"
        "4 Weka kwa M-Pesa\n5 Toa kwa M-Pesa\n6 Akaunti Yangu{requests}\n8 Lipa\n9 Akiba\n0 Ondoka"
    ),
    "main.requests": "\n7 Maombi ({count})",
    "exit": "Asante kwa kutumia SatsPesa. Kwaheri.",
    "send.phone": "Weka nambari ya simu au anwani ya Lightning ya mpokeaji:",
    "send.phone-recent": "Tuma kwa:{lines}\nau weka nambari ya simu au anwani ya Lightning:",
    "send.recent-line": "\n{n} {payee}",
    "send.amount": "Tuma kwa {phone}\nWeka kiasi kwa sats ({min}-{max})\nau 1 kuweka KES",
    "send.kes": "Tuma kwa {phone}\nWeka kiasi kwa KES ({min}-{max}):",
    "send.confirm-kes": "Tuma sats {amount} (KES {kes}) kwa {phone}{recipient}\nAda: sats {fee}\nBei halali dak {valid}\n1 Thibitisha\n0 Ghairi",
    "send.confirm": "Tuma sats {amount} kwa {phone}{recipient}\nAda: sats {fee}\nJumla: sats {total}\n1 Thibitisha\n0 Ghairi",
    "send.done": "Umetuma sats {amount} kwa {phone}. Ada sats {fee}. Kumb {ref}. Salio: sats {balance}.",
    "send.ln.amount": "Lipa {payee}\nKiasi kwa sats ({min}-{max}):",
    "send.ln.confirm": "Lipa sats {amount} kwa {payee}\nAda hadi sats {fee}\nJumla hadi sats {total}\n1 Thibitisha\n0 Ghairi",
    "lnsend.done": "Umelipa sats {amount} kwa {payee}. Ada sats {fee}. Kumb {ref}. Salio: sats {balance}.",
    "lnsend.failed": "Malipo ya Lightning hayakufaulu. Sats zako zimerudishwa. Kumb {ref}.",
    "lnsend.pending": "Tunalipa sats {amount} kwa {payee}. Kumb {ref}. Tutakutumia SMS ya matokeo.",
    "lnsend.nothing-sent": "Hakuna kilichotumwa.",
    "lnsend.already-paid": "Ankara hii imeshalipwa. Hakuna kilichotumwa.",
    "lnurl.unreachable": "Anwani hiyo haipatikani. Jaribu baadaye.",
    "lnurl.bad-answer": "Anwani hiyo ilijibu vibaya.",
    "lnurl.refused": "Anwani hiyo ilikataa malipo.",
    "lnurl.name-required": "Anwani inataka jina lililothibitishwa: thibitisha ID.",
    "lnurl.bad-invoice": "Anwani hiyo ilituma ankara isiyofaa.",
    "receive.amount": "Pokea kwa Lightning\nAnwani: {address}\nau weka kiasi kwa sats ({min}-{max}):",
    "receive.done": "Ankara ya sats {amount} imeundwa, kumb {ref}. Tumekutumia kwa SMS. Inadumu dakika {minutes}.",
    "request.phone": "Omba malipo\nWeka nambari ya simu ya mlipaji:",
    "request.amount": "Omba kutoka {phone}\nWeka kiasi kwa sats ({min}-{max}):",
    "request.done": "Ombi la malipo la sats {amount} limetumwa kwa {phone} kwa SMS. Kumb {ref}.",
    "payreq.list": "Maombi ya malipo:{lines}\n0 Rudi",
    "payreq.line": "\n{n} sats {amount} kwa {phone}",
    "payreq.confirm": "Lipa sats {amount} kwa {phone}\nKumb {ref}\nAda: sats {fee}\n1 Thibitisha\n0 Ghairi",
    "payreq.done": "Umelipa sats {amount} kwa {phone}. Kumb {ref}. Salio: sats {balance}.",
    "payreq.gone": "Ombi hili halipo wazi tena.",
    "mpesapay": "Lipa\n1 Nunua Bidhaa (till)\n2 Lipa Bili\n3 Muda wa maongezi\n0 Rudi",
    "mpesapay.till": "Weka nambari ya till:",
    "mpesapay.recent": "Ulilipa awali:{lines}\n{prompt}",
    "mpesapay.paybill": "Weka nambari ya paybill:",
    "mpesapay.account": "Paybill {party}\nWeka nambari ya akaunti:",
    "mpesapay.amount": "Lipa {payee}\nWeka kiasi kwa KES ({min}-{max}):",
    "mpesapay.pin": "Lipa KES {kes} kwa {payee}\nGharama sats {sats}+ada {fee}, halali dak {valid}\nWeka PIN:\n9 Umesahau PIN",
    "mpesapay.done": "Umelipa KES {kes} kwa {payee}. Kumb M-Pesa {code}. Gharama sats {sats} + ada {fee}. Salio: sats {balance}.",
    "mpesapay.pending": "Malipo ya KES {kes} kwa {payee} yanashughulikiwa. Kumb {ref}. Tutakutumia SMS.",
    "error.shortcode": "Nambari ya till au paybill ni tarakimu 5 hadi 7.",
    # muda wa maongezi (airtime)
    "airtime": "Nunua muda wa maongezi kwa\n1 Nambari yangu {phone}\n2 Nambari nyingine\n0 Rudi",
    "airtime.phone": "Weka nambari ya simu:",
    "airtime.recent": "Uliwanunulia awali:{lines}\nau weka nambari ya simu:",
    "airtime.amount": "Muda wa maongezi kwa {phone}\nWeka kiasi kwa KES ({min}-{max}):",
    "airtime.pin": "Muda wa maongezi KES {kes} kwa {phone}\nGharama sats {sats}+ada {fee}, halali dak {valid}\nWeka PIN:\n9 Umesahau PIN",
    "airtime.done": "Muda wa maongezi KES {kes} umetumwa kwa {phone}. Gharama sats {sats} + ada {fee}. Kumb {ref}. Salio: sats {balance}.",
    "airtime.pending": "Muda wa maongezi KES {kes} kwa {phone} unatumwa. Kumb {ref}. Tutakutumia SMS.",
    "airtime.failed": "Muda wa maongezi haukuweza kutumwa. Sats zako zimerudishwa. Kumb {ref}.",
    "airtime.off": "Muda wa maongezi haupatikani sasa. Hakuna kilichohamishwa.",
    "error.account": "Nambari ya akaunti ni herufi au tarakimu 1 hadi 13.",
    "topup.amount": "Weka pesa kwa M-Pesa\nWeka kiasi kwa KES ({min}-{max}):",
    "topup.code": "Lipa KES {kes} kwa M-Pesa, kisha weka nambari ya uthibitisho ya M-Pesa:",
    "topup.confirm": "Weka KES {kes} = sats {sats}\nBei halali dak {valid}\nNambari ya M-Pesa: {code}\n1 Thibitisha\n0 Ghairi",
    "topup.done": "Umeweka: sats {sats} kwa KES {kes}. Nambari {code}. Salio: sats {balance}.",
    "topup.push": "Weka KES {kes} = sats {sats}\nBei halali dak {valid}\nM-Pesa itakuomba PIN ya M-Pesa kwenye {phone}\n1 Thibitisha\n0 Ghairi",
    "topup.push-sent": "Angalia simu yako: weka PIN yako ya M-Pesa kwenye ombi la M-Pesa kulipa KES {kes}. Kumb {ref}. Tutakutumia SMS sats {sats} zikifika.",
    "topup.push-failed": "M-Pesa haikuweza kutuma ombi la malipo. Hujatozwa chochote. Tafadhali jaribu tena baadaye.",
    "withdraw.amount": "Toa kwa M-Pesa\nWeka kiasi kwa KES ({min}-{max}):",
    "withdraw.phone": "Toa KES {kes}\nWeka nambari ya M-Pesa au\n1 Nambari yangu {phone}",
    "withdraw.phone-other": "Toa KES {kes}\nWeka nambari ya M-Pesa (Safaricom):",
    "withdraw.pin": "Toa KES {kes} kwa {phone}\nGharama: sats {sats} + ada {fee}, bei halali dak {valid}\nWeka PIN:\n9 Umesahau PIN",
    "price.unavailable": "Bei hazipatikani sasa, kwa hivyo malipo ya KES yamesimamishwa. Malipo ya sats bado yanafanya kazi. Jaribu tena baadaye.",
    "quote.renewed": "Bei imebadilika: KES {kes} = sats {sats} sasa.",
    "quote.expired": "Bei uliyoona imeisha muda. Hakuna kilichohamishwa. Tafadhali piga tena.",
    "withdraw.done": "KES {kes} zimetumwa kwa {phone}. Kumb M-Pesa {code}. Gharama sats {sats} + ada {fee}. Salio: sats {balance}.",
    "withdraw.pending": "Utoaji wa KES {kes} kwa {phone} unashughulikiwa. Kumb {ref}. Tutakutumia SMS.",
    "withdraw.failed": "Malipo ya M-Pesa hayakufaulu. Sats zako zimerudishwa. Kumb {ref}.",
    "account": (
        "Salio: sats {balance}{kes}\n{address}\n"
        "1 Taarifa\n2 Lugha\n3 PIN\n4 Jina\n5 Vikomo\n6 Maagizo\n0 Rudi"
    ),
    "account.kes": " (takriban KES {kes})",
    "account.kes-age": " (KES {kes}, bei dak {age})",
    "history": "Miamala ya mwisho:{lines}\n0 Rudi",
    "history.line": "\n{sign}{amount} {who} {date} {ref}",
    "history.empty": "\nHakuna bado.",
    "language": "Chagua lugha:\n1 English\n2 Kiswahili\n0 Rudi",
    "language.done": "Lugha imewekwa: Kiswahili.",
    "name.set": "Jina lako, kama wanaokutumia pesa watakavyoliona{now}:\n0 Rudi",
    "name.now": " (sasa {name})",
    "name.done": "Jina lako ni {name}. Wanaokutumia wanaona: {shown}",
    "name.fixed": "Jina lako {name} limethibitishwa na haliwezi kubadilishwa hapa. Piga huduma kwa wateja kulirekebisha.",
    "error.name": "Jina ni herufi na nafasi 2 hadi 30.",
    "recipient.name": "\nJina: {name}",
    "recipient.new": "\nBado hayuko SatsPesa: atapata SMS ya kuzidai.",
    "recipient.unnamed": "\nYuko SatsPesa, bila jina.",
    "pinchange.old": "Weka PIN yako ya sasa:\n9 Umesahau PIN",
    "pinchange.new": "Weka PIN mpya ya tarakimu {digits}:",
    "pinchange.repeat": "Weka PIN mpya tena:",
    "pinchange.done": "PIN yako imebadilishwa.",
    "forgot": "Umesahau PIN?\nTutaweka upya PIN yako baada ya saa {hours}. Kutoa pesa kumesimamishwa hadi hapo; ukiweka PIN yako ya sasa inaghairiwa.\n1 Thibitisha\n0 Rudi",
    "forgot.done": "Ombi la kuweka upya PIN limepokelewa. Baada ya saa {hours} piga {code} uunde PIN mpya. Kabla ya hapo, ukiweka PIN yako ya sasa inaghairiwa.",
    "forgot.pending": "Kuweka upya PIN kunaendelea: zimebaki saa {hours}. Kisha piga {code} uunde PIN mpya.",
    "reset.pending": "Kuweka upya PIN kunaendelea (zimebaki saa {hours}), kwa hivyo kutoa pesa kumesimamishwa.\nKughairi, weka PIN yako ya sasa:\n0 Rudi",
    "reset.cancelled": "Kuweka upya PIN kumeghairiwa. PIN yako inabaki ile ile.",
    "reset.cancelled-pay": "Kuweka upya PIN kumeghairiwa. PIN yako inabaki ile ile. Hakuna kilichotumwa: piga tena kulipa.",
    "reset.gone": "Kuweka upya PIN kulikwisha kumalizika au kughairiwa kwingine. Hakuna kilichotumwa. Tafadhali piga tena.",
    "reset.new": "Muda wa kuweka upya PIN umefika.\nUnda PIN mpya ya tarakimu {digits}:",
    "forgot.off": "Kuweka upya PIN uliyosahau, tafadhali piga huduma kwa wateja na kitambulisho.",
    "simswap.hold": "Kutuma na kubadili PIN kumesitishwa: SIM kadi hii ilibadilishwa karibuni. Piga huduma kwa wateja na kitambulisho. Kupokea kunaendelea.",
    "aml.hold": "Kutuma na kutoa pesa kutoka akaunti hii kumesitishwa kwa ukaguzi. Piga huduma kwa wateja na kitambulisho. Kupokea kunaendelea.",
    "simswap.unknown": "Hatukuweza kukagua SIM kadi yako sasa, kwa hivyo malipo ya zaidi ya sats {max} yanasubiri. Jaribu kiasi kidogo au baadaye.",
    "simswap.retry": "Hatukuweza kukagua SIM kadi yako sasa. Tafadhali jaribu tena baada ya dakika chache.",
    "pin.enter": "Weka PIN yako kuthibitisha:\n9 Umesahau PIN",
    "pin.wrong": "PIN si sahihi. Nafasi {left} zaidi.",
    "pin.locked": "PIN zisizo sahihi mara nyingi. Huduma za pesa zimefungwa kwa dakika {minutes}. Jaribu baadaye.",
    "pin.format": "PIN lazima iwe tarakimu {digits}.",
    "deny.weak-pin": "PIN hiyo ni rahisi mno kukisia.",
    "deny.below-minimum": "Kiasi ni kidogo. Kima cha chini {unit} {min}.",
    "deny.above-maximum": "Kiasi ni kikubwa. Kima cha juu {unit} {max}.",
    "deny.insufficient-balance": "Salio halitoshi: una sats {balance}.",
    "deny.daily-limit": "Kikomo cha siku cha sats {limit} kimefikiwa.",
    "deny.below-payee-minimum": "Mpokeaji hupokea angalau sats {min}.",
    "deny.above-payee-maximum": "Mpokeaji hupokea hadi sats {max}.",
    "error.option": "Chaguo si sahihi.",
    "error.amount": "Weka nambari kamili.",
    "error.phone": "Nambari ya simu si sahihi.",
    "error.address": "Anwani ya Lightning si sahihi.",
    "error.own-phone": "Hiyo ni nambari yako mwenyewe.",
    "error.code": "Nambari ya M-Pesa si sahihi.",
    "error.code-used": "Nambari hiyo ya M-Pesa imeshatumika.",
    "error.mpesa-phone": "M-Pesa inahitaji nambari ya Safaricom.",
    "error.expired": "Kipindi hiki kimeisha. Tafadhali piga tena.",
    "error.dialled-past": "Namba hiyo inapita hatua unayopaswa kuthibitisha. Piga {code} na ufuate menyu.",
    "pin.not-in-dial": "Kwa usalama wako, usiweke PIN yako kwenye namba unayopiga. Piga {code} na uweke PIN ukiombwa tu.",
    "error.unavailable": "Huduma haipatikani. Tafadhali jaribu tena baada ya dakika chache.",
    "error.lightning": "Lightning haipatikani sasa. Tafadhali jaribu tena baadaye.",
    "error.too-many": "Maombi mengi mno. Tafadhali jaribu tena baadaye.",
    "replay": "Imeshafanyika. Kumb {ref}.",
    "resume.gone": "Malipo hayo hayawezi kuendelezwa: yamekamilika au yanaendelea. Angalia SMS zako, kisha piga tena.",
    "resume": "Endelea ulipoishia?\n{what}\n1 Endelea\n2 Anza upya",
    "help": " Msaada: {phone}",
    "who.lightning": "Lightning",
    "who.mpesa": "M-Pesa",
    "who.adjust": "Nyongeza",
    "who.opening": "Salio awali",
    "who.airtime": "Airtime",
    "sms.welcome": "Karibu SatsPesa! Piga {code} kutumia pochi yako ya Bitcoin: tuma, pokea, weka na toa kwa M-Pesa. Weka jina lako kwenye Akaunti Yangu.",
    "left.today": "Baki ya kutuma leo: sats {left}.",
    "sms.new-recipient": "{phone} amekutumia sats {amount} kwenye SatsPesa. Piga {code} na uunde PIN kufikia {date} kuzitumia, la sivyo zitarudi.",
    "sms.unclaimed-returned": "SatsPesa: {phone} hakudai sats {amount} ulizotuma ndani ya siku {days}; zimerudi. Kumb {ref}. Salio sats {balance}.",
    "sms.unclaimed-gone": "SatsPesa: sats {amount} kutoka {phone} zimerudishwa kwake: hukuunda PIN ndani ya siku {days}. Kumb {ref}.",
    "sms.sent": "SatsPesa: umetuma sats {amount} kwa {phone}. Ada sats {fee}. Kumb {ref}. Salio sats {balance}.",
    "sms.received": "SatsPesa: umepokea sats {amount} kutoka {phone}. Kumb {ref}. Salio sats {balance}.",
    "sms.lightning-failed": "SatsPesa: malipo yako ya sats {amount} kwa {phone} hayakufaulu. Sats zimerudishwa. Kumb {ref}. Salio sats {balance}.",
    "sms.invoice": "Ankara ya SatsPesa ya sats {amount}, kumb {ref}. Lipa kwa pochi yoyote ya Lightning: {bolt11}",
    "sms.invoice-paid": "SatsPesa: ankara {ref} imelipwa. Umepokea sats {amount}. Salio sats {balance}.",
    "sms.request": "{phone} anakuomba ulipe sats {amount} (kumb {ref}). Piga {code} kulipa kwa SatsPesa, au lipa kwa Lightning: {bolt11}",
    "sms.request-user": "{phone} anakuomba ulipe sats {amount} (kumb {ref}). Piga {code} uchague Maombi ya malipo.",
    "sms.topup": "SatsPesa: KES {kes} zimepokelewa, nambari {code}. Umepata sats {sats}. Salio sats {balance}.",
    "sms.topup-failed": "SatsPesa: malipo yako ya M-Pesa ya KES {kes} hayakufaulu (yameghairiwa au yamekataliwa). Hakuna sats zilizowekwa. Kumb {ref}.",
    "sms.withdraw": "SatsPesa: KES {kes} zimetumwa kwa {phone} (M-Pesa), kumb {code}. Gharama sats {sats}, ada {fee}. Salio sats {balance}.",
    "sms.airtime": "SatsPesa: muda wa maongezi KES {kes} kwa {phone}, kumb {ref}. Gharama sats {sats}, ada {fee}. Salio sats {balance}.",
    "sms.airtime-failed": "SatsPesa: muda wa maongezi KES {kes} kwa {phone} haukutumwa. Sats {sats} zimerudishwa. Kumb {ref}. Salio sats {balance}.",
    "sms.pin-locked": "SatsPesa: PIN isiyo sahihi imewekwa mara nyingi. Huduma za pesa zimefungwa kwa dakika {minutes}.",
    "sms.pin-changed": "SatsPesa: PIN yako imebadilishwa. Kama si wewe, piga huduma kwa wateja.",
    "sms.adjusted": "SatsPesa: huduma kwa wateja imekuwekea sats {amount}. Salio sats {balance}.",
    "sms.debited": "SatsPesa: huduma kwa wateja imetoa sats {amount} kwako. Salio sats {balance}.",
    "sms.pin-reset": "SatsPesa: huduma kwa wateja imefuta PIN yako. Piga nambari ya huduma kuunda mpya. Kama hukuomba hivi, piga huduma kwa wateja sasa.",
    "sms.sim-swap-hold": "SatsPesa: SIM kadi yako ilibadilishwa, kwa hivyo kutuma na kubadili PIN kumesitishwa. Piga huduma kwa wateja na kitambulisho.",
    "sms.sim-swap-cleared": "SatsPesa: huduma kwa wateja imekagua kitambulisho chako baada ya kubadilisha SIM. Unaweza kutuma pesa tena.",
    "sms.pin-reset-requested": "SatsPesa: umeomba kuweka upya PIN yako. Baada ya saa {hours} piga {code} uunde mpya. Si wewe? Piga {code} uweke PIN yako kughairi.",
    "sms.pin-reset-cancelled": "SatsPesa: kuweka upya PIN kumeghairiwa kwa sababu PIN yako ya sasa iliwekwa. PIN yako inabaki ile ile.",
    "sms.pin-reset-ready": "SatsPesa: PIN yako imefutwa. Piga {code} uunde PIN mpya.",
    "sms.pin-reset-stopped": "SatsPesa: kuweka upya PIN kumesimamishwa kwa sababu SIM kadi yako ilibadilishwa. Piga huduma kwa wateja na kitambulisho.",
}

EN.update(identity_texts.EN)
SW.update(identity_texts.SW)
EN.update(SAVE_EN)
SW.update(SAVE_SW)
EN.update(CHAMA_EN)
SW.update(CHAMA_SW)
CATALOGS = {"en": EN, "sw": SW}

# The GSM 03.38 default alphabet (basic set) and the extension characters that cost two septets.
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


def gsm7_length(text: str) -> int | None:
    """Septets needed for `text`, or None if any character is outside GSM-7."""
    length = 0
    for char in text:
        if char in GSM7_BASIC:
            length += 1
        elif char in GSM7_EXTENDED:
            length += 2
        else:
            return None
    return length


def _show(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value


MAX_TEXT = 160  # GSM-7 characters: one SMS, one USSD screen
BRAND = "SatsPesa"  # the short name the catalogs are written with
# Messages that send the customer to customer care, or confirm money: they end with the support
# number when the operator has set one (SUPPORT_PHONE).
HELP_KEYS = frozenset({
    "error.unavailable", "error.lightning", "withdraw.failed", "withdraw.pending", "pin.locked", "quote.expired",
    "lnsend.pending", "sms.sent", "sms.received", "sms.lightning-failed", "sms.invoice-paid", "sms.topup",
    "sms.topup-failed", "sms.withdraw", "sms.pin-locked", "sms.pin-changed", "sms.pin-reset", "sms.adjusted",
    "sms.debited", "airtime.failed", "airtime.pending", "sms.airtime", "sms.airtime-failed",
    "simswap.hold", "sms.sim-swap-hold", "sms.pin-reset-stopped", "forgot.off", "name.fixed", "sms.unclaimed-returned",
    "sms.unclaimed-gone", "kyc.off", "kyc.id-taken", "aml.hold",
})
_care = {"name": BRAND, "phone": ""}  # set once at start (set_customer_care); the same in every process


def set_customer_care(name: str, phone: str) -> None:
    """The service's short name (in place of SatsPesa) and customer care's number (none: "")."""
    _care["name"], _care["phone"] = name or BRAND, phone


def t(lang: str, key: str, **values: object) -> str:
    """The message `key` in `lang` (English if unknown), formatted with `values`, in the
    service's name, with customer care's number where the message needs it."""
    catalog = CATALOGS.get(lang, EN)
    return _finish(catalog, key, catalog[key].format(**{k: _show(v) for k, v in values.items()}))


def _finish(catalog: dict[str, str], key: str, text: str) -> str:
    if _care["name"] != BRAND:
        text = text.replace(BRAND, _care["name"])
    if _care["phone"] and key in HELP_KEYS:
        text += catalog["help"].format(phone=_care["phone"])
    return text


def receipt_text(lang: str, key: str, left: int | None, **values: object) -> str:
    """A receipt of money out (`key`, like t) that also says what is left of today's limit, `left`
    sats (None: not known, a replay), where that still fits one SMS or screen (160 GSM-7
    characters, customer care's number included): the money's own facts come first."""
    catalog = CATALOGS.get(lang, EN)
    text = catalog[key].format(**{k: _show(v) for k, v in values.items()})
    if left is not None:
        longer = _finish(catalog, key, text + " " + catalog["left.today"].format(left=_show(left)))
        if (gsm7_length(longer) or MAX_TEXT + 1) <= MAX_TEXT:
            return longer
    return _finish(catalog, key, text)
