"""The one refusal (abstention) detector the whole project uses.

Builders filter with it, the reward's rule terms call it, and every evaluation metric counts
refusals with it, so a response is judged the same way everywhere.

*Abstention* (the positive class) means the response declines to give the requested answer: it
says it does not know, that the passages / context do not hold the information, that the question
cannot be answered, asks the user for the missing detail instead of answering (a clarification
request), or points to another source *instead of* answering. A plain answer, a hedged answer that
still commits ("I think it is 9.99, but check your contract"), an answer that merely contains a
negation ("No, roaming is not charged in the EU") and an answer followed by a caveat are not
abstentions.

How a response is scored
------------------------
1. Only its *lead* is judged: the first substantive sentence (leading pleasantries such as
   "Sorry." or "Good question!" are skipped; a clause after ``;`` belongs to what follows; a very
   short lead such as "No." takes the next sentence with it). A response that answers first and
   hedges later is an answer.
2. Regular-expression evidence in log-odds: abstention patterns (first-person "I don't know" /
   "I can't find", source denials "the passages do not mention", terse phrasings a trained small
   model invents such as "The question is not known." or "Answer: unknown.", clarification
   requests, redirections) add to the logit; answer patterns ("Yes, ...", "I think it is ...",
   "not sure, but ...", a quantity with a unit) subtract from it.
3. With an encoder, an embedding-prototype term: ``PROTO_SCALE * (mean cosine to the abstention
   prototypes - mean cosine to the answer prototypes) + PROTO_OFFSET``, clipped to
   ``+-PROTO_CLIP`` so that a strong pattern hit (weight 4-4.5) always outweighs it. The
   prototypes are the module tuples below, encoded once per detector instance (lazily).
   The *mean* (nearest-centroid) rather than the *max* cosine is deliberate: on en.jsonl the
   prototype term alone separates the classes with AUC 0.94 using means and 0.80 using maxima,
   because MiniLM's nearest neighbour is mostly chosen by topic words, not by stance.
4. ``score = sigmoid(pattern logit + prototype logit)``; without an encoder the prototype logit
   is replaced by a fixed prior that leans towards "answer", so only a pattern hit flags a refusal.
   A strong pattern hit gives a high score, a strong answer pattern a low one, and where no
   pattern fires the prototype term decides.

An empty (or whitespace-only) response is neither an answer nor a refusal: its score is exactly
0.5 and ``is_refusal`` returns ``False`` for it whatever the threshold.

Languages
---------
English (``en``) and Simplified Chinese (``zh``) have their own patterns, filler words, lead rules
and prototypes; the Chinese ones live in :mod:`halluguard.refusal_zh`. ``language="auto"`` (the
default) judges each response with the language :func:`halluguard.language.detect_language` finds
in it (the share of CJK ideographs, so "资料里没有提到eSIM。" is Chinese), which leaves every English
verdict and score exactly as they were before Chinese existed; ``"en"`` or ``"zh"`` forces one
language for all responses. The lead cache is keyed by (language, lead). By default Chinese
responses get no prototype term, because the embedded English encoder does not help there (figures
at ``PROTOTYPE_LANGUAGES``): they are scored by their patterns and the patterns-only prior, with or
without an encoder. Chinese leads differ from
English ones in two ways that Chinese punctuation forces (clauses joined by commas): the lead is cut
before a caveat clause (但/不过/至于/其他/具体...) that follows a plain statement, and the first clause
with decisive evidence decides; see :mod:`halluguard.refusal_zh`.

The detector is measured on ``halluguard/data/refusal_eval/en.jsonl`` (tuning set) and
``en_heldout.jsonl`` (written after tuning), see ``tests/test_refusal.py``, and on ``zh.jsonl``,
see ``tests/test_refusal_zh.py``. Re-measure it on the outputs of a trained policy whenever the
policy changes: a policy invents phrasings.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from halluguard import refusal_zh
from halluguard.errors import HalluguardError, did_you_mean
from halluguard.language import SUPPORTED_LANGUAGES, detect_language

LANGUAGE_SETTINGS = SUPPORTED_LANGUAGES + ("auto",)

# ---------------------------------------------------------------- prototypes
# Written for halluguard. The labelled evaluation sets must not share sentences with these
# (tests/test_refusal.py checks it), so that they measure generalisation.
# Both lists cover the same topics (price, refund, travel, contract, data, SIM, modem, device,
# invoice, branch, number transfer, app, history, science), one sentence per stance and topic:
# MiniLM's similarity is dominated by topic words, so a topic present on one side only would pull
# every response on that topic to that side. With topics balanced, the stance decides the margin.

ABSTENTION_PROTOTYPES: tuple[str, ...] = (
    # price
    "I don't know how much the subscription costs.",
    "The handbook excerpts give no price for this package.",
    "Which subscription's price are you asking about?",
    "For current prices, please ask our sales team.",
    # refund
    "I can't tell when the money will be returned.",
    "Nothing in the documents explains the reimbursement process.",
    "Was the payment you want back made by card or by transfer?",
    "Please contact the billing department about your reimbursement.",
    # travel / roaming
    "I have no information about charges when travelling abroad.",
    "The context does not list roaming rates for that country.",
    "Which country will you be visiting?",
    "Check the travel section of our website for roaming rates.",
    # contract
    "I can't say whether there is a penalty for ending the agreement early.",
    "The agreement terms aren't described in the text I have.",
    "How long ago did you sign the agreement?",
    "A sales representative can explain your agreement.",
    # data
    "I am unsure how fast the connection gets after the limit, and the passages don't say.",
    "No information is given about the data allowance.",
    "Do you want the speed before or after the data limit?",
    "Please ask customer care about your data usage.",
    # SIM
    "I'm unable to tell you the code for your SIM card.",
    "The documents do not explain how to set up an eSIM on that phone.",
    "Which phone are you trying to put the SIM in?",
    "The store can help you with the SIM card swap.",
    # modem / internet
    "I don't have the details for that modem.",
    "Modem settings are not covered by the provided material.",
    "What lights do you see on the modem?",
    "Please call technical support about the internet outage.",
    # device / guarantee
    "I cannot confirm whether the repair would be free.",
    "The guarantee conditions for that laptop are not in the sources.",
    "Do you still have the receipt, and from which shop?",
    "The manufacturer is the best contact for guarantee claims.",
    # invoice
    "I don't know why the invoice amount changed.",
    "The invoice details are not part of the passages.",
    "Can you say what the invoice number is?",
    "The card issuer should be asked about that transaction.",
    # branch
    "I don't know when that branch opens.",
    "The opening times of the outlets are not given in the text.",
    "Which branch are you planning to visit?",
    "Please check the store locator for opening times.",
    # number transfer
    "I can't find how long a number transfer takes.",
    "The porting procedure isn't mentioned in the documents.",
    "Which provider are you moving from?",
    "Your previous operator should be asked about this.",
    # app / account
    "I'm not able to find anything about resetting the password.",
    "The manual does not describe that menu.",
    "Which device are you using the app on?",
    "Our help desk can reset the account for you.",
    # history
    "I don't know the year that happened.",
    "The passages contain nothing about this historical event.",
    "Which war are you asking about?",
    "You may find that in a history book.",
    # science / geography
    "I can't say how far apart the two cities are.",
    "The text does not give the boiling point.",
    "Which river do you mean?",
    "A scientist or a textbook could answer that better.",
    # generic and terse
    "Result: no answer.",
    "Information about this is missing.",
    "Sorry, this is beyond what I can help with.",
    "More detail from you would help me answer.",
)

ANSWER_PROTOTYPES: tuple[str, ...] = (
    # price
    "The basic subscription is 19 dollars monthly.",
    "No, the package has no setup charge.",
    "I think the package is about 12 euros.",
    "It costs 30 euros, though promotions can lower it.",
    # refund
    "Reimbursements arrive as a credit on your next invoice.",
    "Reimbursements never include the delivery charge.",
    "It should reach your account in about five days.",
    "The money goes back to your card, minus any unpaid usage.",
    # travel / roaming
    "Using your phone in Canada costs 2 dollars a day.",
    "Roaming is not available on prepaid cards.",
    "I believe Turkey is in the travel zone 2 list.",
    "Texts sent from abroad cost 20 cents, while receiving them is free.",
    # contract
    "The agreement runs for 24 months.",
    "Changing the agreement does not reset its length.",
    "Probably you can end it with a month's notice.",
    "You can end it anytime, but the device balance is due.",
    # data
    "The allowance is 50 GB, shared by all lines on the account.",
    "Extra gigabytes can't be shared with other lines.",
    "It's likely the connection was throttled by the fair-use policy.",
    "The speed is 300 Mbps, depending on your location.",
    # SIM
    "Enter the code 0000 when the phone asks for it.",
    "You don't need a new card for 5G.",
    "I'd guess the eSIM can be moved to a new phone.",
    "The SIM ships in two days, although remote areas take longer.",
    # modem / internet
    "Connect the grey cable to the port marked WAN.",
    "The modem doesn't need a separate power supply.",
    "It seems the outage was fixed this morning.",
    "The modem comes with fibre; the mesh extender costs 4 euros monthly.",
    # device / guarantee
    "Laptop guarantees run for thirty-six months.",
    "Batteries are not part of the guarantee after one year.",
    "Most likely the repair centre needs about a week.",
    "Repairs are free in the first year, but shipping is charged.",
    # invoice
    "The invoice went up because of the new add-on.",
    "Instalments carry no interest.",
    "It looks like the extra amount is a one-off fee.",
    "Payment is taken by direct debit on the 3rd; a failed debit costs 4 euros.",
    # branch
    "Saturday hours at the branch are 8:30 to 13:00.",
    "The outlet isn't open on Sundays.",
    "I believe the nearest branch is on Station Road.",
    "Closing time is 7 pm, and 5 pm during the summer.",
    # number transfer
    "Moving your number to us is done within two hours.",
    "The transfer does not interrupt your calls.",
    "It's probably done by tomorrow morning.",
    "The transfer is free; keep your old SIM active until it completes.",
    # app / account
    "Tap Forgot password on the login screen.",
    "The app does not store your card details.",
    "I'm fairly confident the setting is under Privacy.",
    "You can reset it in the app; the link expires after an hour.",
    # history
    "The war ended in 1945.",
    "The Romans did not build the pyramids.",
    "I think the treaty was signed in 1648.",
    "The bridge opened in 1937, after four years of building.",
    # science / geography
    "The Nile is about 6,650 km long.",
    "Sound does not travel in a vacuum.",
    "The two cities are probably 300 kilometres apart.",
    "Gold melts at 1,064 degrees Celsius, slightly lower if impure.",
    # generic
    "Yes, that's right.",
    "No, that's not the case.",
    "Marie Curie discovered polonium, with her husband Pierre.",
    "Einstein did not win a Nobel Prize for relativity.",
)

# ---------------------------------------------------------------- patterns

_F = re.IGNORECASE

# Things an answer is read from: "the passages do not mention ...".
_SRC = (r"(?:passages?|context|contexts|documents?|documentation|docs|handbook|manual|texts?(?! messages?)|"
        r"sources?(?! code| of)|knowledge(?: base)?|kb|material|materials|excerpts?|extracts?|snippets?|articles?|"
        r"paragraphs?|references?|pages|(?:user )?guide|provided information|"
        r"information (?:provided|given|supplied|available|i have)|"
        r"information (?:i was|i've been|i have been|we were) (?:given|provided|shown)|"
        r"what i (?:have|was given|was shown|have been given)|"
        r"data i have|retrieved results?|search results?)")
_SRC_MOD = r"(?:(?:the|these|those|this|my|any|your|our) )?(?:(?:provided|given|supplied|retrieved|available|above) )?"
_NEG = r"(?:not|n't|never)"
_ADVERB = r"(?:(?:really|honestly|simply|just|unfortunately|still|truly|genuinely|actually|sadly|afraid I|\w+ly) )?"
_I_CANNOT = (r"\bi(?:'m|'ve| am| was| have)? " + _ADVERB + r"(?:cannot|can't|can not|could not|couldn't|"
             r"unable to|not able to|wasn't able to|was not able to|not in a position to|not been able to|"
             r"been unable to|haven't been able to|have not been able to)")
_KNOW_VERB = (r"(?:answer|say|tell|find|locate|determine|confirm|provide|give|help|see|know|verify|work|"
              r"figure out|access|comment|speak|share|identify|establish|look up|retrieve|check|guess|"
              r"narrow (?:it|that|this) down)")

# Evidence that the lead abstains: (pattern, weight in log-odds).
_ABSTAIN_PATTERNS: tuple[tuple[str, float], ...] = (
    # first person: does not know / cannot answer
    (r"\bi(?:'m| am)? " + _ADVERB + r"(?:do not|don't|dont|did not|didn't) "
     r"(?:know|have (?:any |enough |the |that |this |such |reliable |sufficient |specific |much |an? )?"
     r"(?:information|info|data|details?|knowledge|access|record|answer|idea|clue|figures?|numbers?|facts?)|"
     r"see (?:any|anything)|find (?:any|anything|it|that|this))", 4.5),
    (_I_CANNOT + r" (?:\w+ ){0,2}?" + _KNOW_VERB + r"\b", 4.5),
    (r"\bi (?:have|had|'ve got) (?:no|zero) (?:idea|information|info|data|details?|knowledge|record|way of knowing|"
     r"answer|clue|access|means)\b", 4.5),
    (r"\bi lack\b", 4.0),
    # "We don't have the prices for X in the passages on Y": first person, singular or plural, lacking it in the sources
    (r"\b(?:i|we) (?:do not|don't|did not|didn't) (?:have|see|find|hold)\b[^.?!]{0,80}?\b(?:in|within|from) " +
     _SRC_MOD + r"(?:\w+ )?" + _SRC + r"\b", 4.5),
    (r"\bno (?:idea|clue)\b", 3.5),
    (r"\b(?:(?:that|this|you)(?: one| question)? (?:stumps|has stumped) me|i'm stumped|i am stumped|beats me|"
     r"i(?:'m| am) drawing a blank)\b", 3.5),
    (r"\b(?:and|but|yet|still) (?:i )?(?:can't|cannot|couldn't|could not) (?:see|find|locate|spot)\b", 3.5),
    (r"\b(?:rather|prefer|better) not (?:to )?(?:guess|speculate)\b", 3.0),
    (r"\b(?:want|like) to (?:avoid )?(?:making|make) (?:something|things|it|anything) up\b", 3.0),
    (r"\bi (?:was not|wasn't|have not been|haven't been|am not|'m not) (?:given|provided|told|shown|aware)\b", 3.5),
    (r"\b(?:beyond|outside) (?:my|the|what)\b[^.?!]{0,40}?\b(?:knowledge|scope|cover(?:s|ed)?|know|have|"
     r"expertise)\b", 3.5),
    (r"\b(?:not|isn't|is not) something (?:i|we) (?:can|could|am able to|know|have)\b", 4.0),
    (r"\b(?:isn't|is not) something the\b[^.?!]{0,40}?\b" + _SRC + r"\b", 4.0),
    (r"\bi(?:'m| am) (?:not (?:\w+ )?(?:sure|certain)|unsure|uncertain)\b", 2.0),
    # the sources do not hold it
    # 80 characters after the source: the policy names its passages ("the passages on X and Y don't answer ..."),
    # but not across a quote's "says:" (what the quoted source says is not denied)
    (r"\b(?:the|these|those|this|my|provided|given|supplied|retrieved|available|our)\b[^.?!]{0,40}?\b" + _SRC +
     r"\b(?:(?!says?:)[^.?!]){0,80}?\b(?:do(?:es)?|did|is|are|was|were|have|has)?\s*" + _NEG +
     r"\s*(?:\w+ )?(?:mention|say|state|contain|include|cover|specify|provide|give|address|answer|tell|discuss|list|"
     r"describe|explain|refer|talk|indicate|show|hold|touch|deal|go into|clarify|appear|have (?:any|anything|"
     r"the|that|this|an?|information|details?|data|an answer)\b)"
     # a passive whose agent is no source is the content's negation: "... are not covered by the cooling-off period"
     r"(?!\w* by (?!" + _SRC_MOD + r"(?:\w+ )?" + _SRC + r"\b))", 4.5),
    # "The sections on X and Y don't state ...": the sections as the subject (not "Based on the section on X, Nimbus
    # doesn't provide refunds", whose negation is the content's)
    (r"^\W*the sections? on [^.?!,:]{1,80}? (?:do(?:es)?n't|do(?:es)? not|never) (?:\w+ )?(?:mention|say|state|cover|"
     r"include|answer|give|list|specify|contain)", 4.5),
    (r"\b" + _SRC + r"\b[^.?!]{0,30}?\b(?:is|are|was|were|remains?) silent\b", 4.5),
    (r"\b(?:is|are) silent (?:on|about|regarding)\b", 3.5),
    (r"\bnothing (?:in|within|from|on) " + _SRC_MOD + r"(?:\w+ )?" + _SRC + r"\b", 4.5),
    (r"\bnothing (?:i|that i|we) (?:have|can see|can find|found|could find|was given)\b", 4.0),
    (r"\bnone of " + _SRC_MOD + r"(?:\w+ )?" + _SRC + r"\b", 4.5),
    (r"\b(?:no|nothing|none) (?:\w+ ){0,2}?(?:in|within|from) " + _SRC_MOD + _SRC + r"\b", 4.0),
    (r"\b(?:not|isn't|is not|aren't|are not|wasn't|was not|never) (?:\w+ ){0,2}?(?:mentioned|stated|specified|"
     r"provided|given|covered|included|found|listed|available|addressed|documented|described|answered|present|"
     r"contained|discussed|explained|indicated|shown|defined) (?:\w+ )?(?:in|by|within|from|under|anywhere in) " +
     _SRC_MOD + r"(?:\w+ )?" + _SRC + r"\b", 4.5),
    (r"\b(?:not|isn't|aren't|wasn't) (?:in|within|from|part of|found in|covered by) " + _SRC_MOD + _SRC + r"\b", 4.5),
    # "so any answer would be a guess"
    (r"\bany (?:answer|figure|number|amount|price|date|name)\b[^.?!]{0,30}?\bwould (?:only )?be (?:a |pure )?"
     r"(?:guess|guesswork|speculation)\b", 4.0),
    (r"\bnever (?:mentions?|says|states|specifies|covers|gives|lists)\b", 3.0),
    (r"^\W*(?:it is |it's |this is |that is |that's |this isn't |it isn't |that isn't )?(?:not|nowhere) (?:\w+ )?"
     r"(?:mentioned|stated|specified|provided|given|covered|known|found|available|listed|documented|answered|"
     r"specified|clear|determinable)\b", 4.5),
    (r"\bno (?:relevant |specific |such |further |additional |reliable |direct |clear |useful |matching |right |"
     r"correct |definite |definitive )?"
     r"(?:information|info|mention|details?|answer|record|reference|indication|evidence|passage|context)\b"
     r"(?! (?:is|will be|are) (?:shared|sold|stored|collected|kept|passed|required|needed))", 4.5),
    (r"\bno data\b(?!\s+(?:cap|limit|allowance|plan|roaming|charges?|usage|fees?|bundle|speed|throttl|"
     r"is (?:shared|sold|stored|collected)))", 3.5),
    (r"\bthere(?:'s| is| are|'re| was) (?:not enough|insufficient|nothing|no) (?:\w+ ){0,2}?(?:information|info|mention|"
     r"details?|data|answer|record|reference|indication|material|mentioned|stated|said|about it|"
     r"on (?:that|this|it))\b", 4.5),
    (r"\bthere (?:isn't|is not|wasn't|was not|aren't|are not) (?:enough|anything|any (?:information|mention|details?|"
     r"data|answer|reference|record))\b", 4.5),
    (r"\b(?:question|this|it|that|answer)\b[^.?!]{0,20}?\b(?:cannot|can't|can not|could not|couldn't) be (?:answered|"
     r"determined|found|confirmed|established|verified|said|known|given|provided|worked out|inferred|deduced)\b", 4.5),
    (r"\b(?:unanswerable|undeterminable|indeterminable)\b", 4.5),
    (r"\b(?:not possible|impossible|no way) (?:for me )?to (?:answer|say|tell|know|determine|work out|"
     r"find out)\b", 4.0),
    (r"\b(?:the )?answer (?:is|was|remains|isn't|is not) (?:not |un)?(?:known|unknown|given|provided|available|"
     r"stated|clear|unclear|specified|found|determinable|included|present|there|mentioned)\b(?<!answer is known)", 4.5),
    (r"\banswer (?:not|isn't|wasn't) (?:found|known|available|given|provided|stated|present|there)\b", 4.5),
    (r"\b(?:the )?question (?:is|was|remains) (?:not known|unknown|unclear|not answerable|unanswerable|open|"
     r"not answered|not addressed|not covered)\b", 4.5),
    (r"^\W*(?:cannot|can't|can not|could not|couldn't|not able to) be (?:answered|determined|found|confirmed|"
     r"established|verified|said|known|worked out|inferred)\b", 4.5),
    # the sources' scope: "the handbook sections I received cover billing only"
    (r"\b" + _SRC + r"\b[^.?!]{0,40}?\b(?:only|just|merely) (?:cover|describe|mention|discuss|talk about|deal with|"
     r"concern|list|explain)|\b" + _SRC + r"\b[^.?!]{0,30}?\b(?:cover|covers|describe|describes|mention|mentions|"
     r"discuss|discusses|deal with|deals with|concern|concerns|list|lists)\b[^.?!]{0,40}?\bonly\b", 3.5),
    (r"\b(?:insufficient|not enough|too little) (?:information|info|context|data|details?|evidence)\b", 4.5),
    (r"^\W*(?:the )?(?:information|info|details?|data|answer)s? (?:not |un)(?:provided|given|available|stated|known|"
     r"specified|found|mentioned)\b", 4.5),
    (r"\b(?:information|info|details?|data|answer)\b[^.?!]{0,40}?\b(?:is|are|was|were|seems|appears)(?: to be)? "
     r"(?:missing|unavailable|not available|not provided|not given|not included|not present|lacking|absent)\b", 4.5),
    (r"^\W*(?:answer|response|result|output)?\s*[:\-]?\s*(?:unknown|n/?a|not known|not available|no idea|no answer|"
     r"not sure|unsure|unclear|cannot say|can't say|cannot answer|can't answer|not answerable|not applicable|"
     r"no info(?:rmation)?|don't know|do not know|i don't know|i do not know)\b", 4.5),
    (r"\bunknown (?:from|in|based on|given|according to)\b", 4.0),
    (r"\b(?:cannot|can't|can not|unable to) (?:answer|say|tell)\b", 3.5),
    (r"\b(?:doesn't|does not|don't|do not) (?:appear|seem) to (?:be )?(?:mention|say|cover|include|contain|address|"
     r"mentioned|covered|included|stated|discussed)\b", 3.5),
    (r"\b(?:lets?|allows?) me (?:to )?(?:work out|answer|determine|say|tell)\b", 2.0),
    (r"\bi(?:'m| am) afraid\b", 1.0),
    # clarification requests
    (r"\?\s*$", 3.5),
    (r"^\W*(?:could|can|would|will) you (?:please |kindly |perhaps )?(?:tell|let me know|specify|clarify|confirm|"
     r"share|provide|give|say|explain|describe|rephrase|check|send|name|indicate|elaborate|point)\b", 3.5),
    (r"\bmay i ask\b", 3.5),
    (r"\b(?:do|did) you mean\b", 3.0),
    (r"\bplease (?:tell|let) me\b", 3.5),
    (r"\bplease (?:specify|clarify|confirm|describe|indicate|say which|state which|share)\b", 3.0),
    (r"\bi(?:'d| would| will|'ll)? (?:first )?need (?:to know|more|a bit more|a little more|some more|further|"
     r"additional|"
     r"your|you to|some|to ask)\b", 3.5),
    (r"\b(?:more|further|additional) (?:details?|information|info|context|specifics)\b", 1.5),
    (r"\bjust to (?:make sure|be sure|clarify|confirm|check)\b", 3.0),
    (r"\blet me (?:check|make sure|confirm) (?:that )?i (?:understand|understood|follow)\b", 3.5),
    (r"\b(?:not clear|unclear) (?:which|what|whether|if|who|where|when)\b", 3.5),
    (r"\bcould (?:refer|apply) to\b", 3.0),
    (r"\btell me (?:a little |a bit |some )?more\b", 3.5),
    (r"\bbefore i (?:can )?(?:answer|help|check|compare|look)\b", 2.5),
    # redirections
    (r"\b(?:please|you(?:'d| would|'ll| will| may| might)? (?:should|could|can|may|might|need to|want to|"
     r"best|better)|you(?:'d| had) (?:best|better)|i(?:'d| would)? (?:recommend|suggest|advise)|(?:it's |it is )?"
     r"(?:best|better|wiser) to|try|you're best off|you are best off) (?:\w+ )?(?:contact(?:ing)?|call(?:ing)?|"
     r"ring(?:ing)?|phon(?:e|ing)|e-?mail(?:ing)?|reach(?:ing)? out to|get(?:ting)? in touch with|"
     r"speak(?:ing)? (?:to|with)|talk(?:ing)? (?:to|with)|ask(?:ing)?|consult(?:ing)?|check(?:ing)? with|"
     r"visit(?:ing)?|writ(?:e|ing) to|direct(?:ing)? (?:that|this|your) question|refer(?:ring)? to|"
     r"(?:have|take|having|taking) a look at|look(?:ing)? (?:at|in)|check(?:ing)? (?:the|a|an|your) (?:official|"
     r"website|site|app|user guide|manual|faq|help))\b", 3.0),
    (r"^\W*(?:consult|contact|reach out to|get in touch with|speak (?:to|with)|talk (?:to|with)|refer to|"
     r"check with|(?:have|take) a look at) ", 2.5),
    (r"\b(?:best|better) (?:handled|answered|dealt with|addressed|asked) (?:by|at|in)\b", 3.5),
    (r"\b(?:call|contact|e-?mail|ring|phone|write to|message) us\b", 2.0),
    (r"\b(?:is|are|would be|'s|'re) (?:the |a |your )?(?:right|best|better|correct|proper) (?:place|source|people|"
     r"person|contact|team)\b", 3.5),
    (r"\bbetter (?:placed|qualified|source)\b", 3.5),
    (r"\b(?:is|'s|would be|might be|will be) (?:a question|one|something|a matter) for (?:your|the|a|an|our)\b", 3.5),
    (r"\bcan (?:advise|help|assist) you (?:with|on) (?:that|this|it)\b", 3.0),
    (r"\bwould know\b", 2.0),
    (r"\b(?:can|will be able to|could) (?:walk you through|look into|pull up|quote|confirm whether|"
     r"tell you that)\b", 2.0),
    (r"\bis the place to (?:look|ask|check|go)\b", 3.0),
    (r"\b(?:will|should|would) have the (?:up-to-date|latest|current|exact|full|official)\b", 2.5),
    (r"\bi(?:'d| would| will|'ll)? (?:point|refer|direct|send) you to\b", 3.0),
    # a third party is named as the one who can answer
    (r"\b(?:someone|somebody|a member|staff|team|department|desk|colleagues?|agents?|advisers?|advisors?|"
     r"specialists?|people|experts?|engineers?|representatives?|electricians?|technicians?|professionals?)\b"
     r"[^.?!]{0,40}?\b(?:will|would|should|could|can|"
     r"may)(?: be able to)? (?:explain|help|answer|advise|assist|confirm|tell|clarify|look into|sort|take a look|"
     r"have a look|look at|check|inspect|deal with|handle)\b", 2.5),
    (r"\braise (?:that|this|it|the (?:issue|question|matter))\b[^.?!]{0,20}?\bwith\b", 3.0),
    (r"\b(?:is|'s|are|'re) (?:one )?for (?:the|your|our|a|an) [^.?!]{0,40}?\bto (?:confirm|answer|decide|advise|"
     r"check|explain|say)\b", 3.0),
    # (not in a quote: "The section on X says: The officer handles questions about ..." passes the source on)
    (r"^(?![^.?!]*?\bsays:)[^.?!]*?\bhandles? (?:questions|enquiries|inquiries|queries|requests) "
     r"(?:about|on|regarding)\b", 3.0),
    # "The section on X says nothing about the fee": the quote form of a source denial
    (r"\bsays? nothing (?:about|on|regarding|of)\b", 4.0),
)

# Words by which a quote-form lead declines after all ("Based on the passage on X, it is unclear ...", "..., I'm
# afraid that is beyond what I know"): a negation, a hedge, or the policy speaking for itself, which a quoted
# knowledge-base statement never does.
_QUOTE_DECLINES = (r"not|no|never|nothing|none|cannot|unable|unclear|unsure|uncertain|unknown|missing|outside|beyond|"
                   r"guess\w*|sorry|afraid|unfortunately|lacks?|without|silent|absent|i|i'm|i've|i'd|my|me")

# Evidence that the lead commits to an answer despite hedges or negations.
_ANSWER_PATTERNS: tuple[tuple[str, float], ...] = (
    (r"^\W*(?:yes|yeah|yep|no|nope|correct|right|indeed|absolutely|exactly|sure|certainly|of course)"
     r"\s*[,.!:;\u2014\u2013-]",
     3.0),
    (r"\b(?:i (?:think|believe|suspect|guess|reckon)|i'd (?:say|guess|think)|my (?:best )?guess|most likely|probably|"
     r"presumably|chances are|likely|perhaps|if i(?:'m| am) not mistaken|if i (?:remember|recall) (?:correctly|right)|"
     r"to the best of my knowledge|as far as i (?:can tell|know)|i(?:'m| am) (?:fairly|pretty|quite|reasonably) "
     r"(?:sure|certain|confident)|(?:it|this|that) (?:seems|appears|looks like)|seems to be|appears to be)\b"
     r"(?! (?:you (?:should|could|can|might|may|'d|need)|it's best|the (?:passages?|context|documents?|handbook|text)|"
     r"i (?:can't|cannot|don't|do not|have no)|there(?:'s| is) no))", 2.5),
    (r"\b(?:not (?:\w+ )?(?:sure|certain)|unsure|no idea|could be wrong|might be wrong|may be wrong)\b"
     r"[^.?!]{0,15}?\bbut\b"
     r"(?!\s+(?:i (?:can't|cannot|don't|do not|have no|couldn't)|the (?:passages?|context|documents?|handbook|text)|"
     r"you (?:could|can|should|might|may) (?:ask|contact|check|call)|please|it's not|nothing|"
     r"there(?:'s| is) no))", 3.0),
    # instructions: a how-to answer starts with the action
    (r"^\W*(?:dial|tap|press|go to settings|open|select|insert|scan|restart|reboot|enter|click|hold|turn|unplug|"
     r"plug|switch|text|install|download|update|remove|pop|slide|swipe|log in to the app and) ", 1.5),
    # where a thing is: "the code is on the card", "the QR code is in your welcome email"
    (r"\b(?:is|are) (?:printed |shown |listed |written |stored |found )?(?:on|in|under|inside|underneath|at the "
     r"back of) (?:the|your) (?!(?:passages?|context|documents?|documentation|handbook|text|sources?|knowledge|"
     r"(?:user )?guide|manual|terms|website|site|faq|help|app)\b)", 1.5),
    # a hedged estimate still commits: "it should be around 6 euros", "it might be the SIM lock"
    (r"\b(?:it|that|this|they|the \w+) (?:should|would|will|must|might|may|could) (?:probably |likely )?"
     r"(?:be|cost|take|last|work|arrive|reach|come)\b(?! (?:a question|one|something|a matter|best|better|able))",
     2.0),
    (r"(?:[\u20ac$\u00a3]\s?\d|\b\d+(?:[.,]\d+)?\s?(?:\u20ac|euros?|eur|dollars?|pounds?|cents?|gb|mb|tb|gbps|mbps|"
     r"kbps|%|percent|days?|hours?|minutes?|mins?|weeks?|months?|years?|km|kilometres?|kilometers?|metres?|"
     r"meters?|m/s|\u00b0c|\u00b0f|kg)\b)", 1.5),
    # any other figure (a year, a count, a code) is a specific, and specifics are what answers give
    (r"\d", 1.0),
    # A lead that opens with a bare value ("€649: The price ... isn't covered in what I have.", "5 working days: ...")
    # has committed to it before any caveat: an answer with a caveat (refusal_eval/README.md), whatever follows.
    # The weight outweighs the strongest abstention pattern plus the prototype term's clip (4.5 + 3.0).
    (r"^\W*(?:[\u20ac$\u00a3]\s?\d[\d.,]*|\d[\d.,]*\s?(?:\u20ac|euros?|eur|dollars?|pounds?|%|percent|"
     r"(?:working )?days?|hours?|minutes?|weeks?|months?|years?|gb|mb)?)\s*(?::|\u2014|\u2013|\.(?=\s|$))", 7.5),
    # The quote form the SFT reference is trained on ("The section on X says: ...", "According to the information
    # on X, ..."), followed by a statement that does not decline (_QUOTE_DECLINES): it passes the knowledge base's
    # text on, which is an answer. The prototype term calls quotes about requests or personal data refusals
    # (0.65-0.85), in about 1% of the sixth GPU run's sampled answers.
    (r"^\W*(?:the section on [^.?!:]{1,80}? says:|(?:according to|based on) the (?:information|passages?|section) on "
     r"[^.?!,:]{1,80}?,)\s+(?![^.?!]*?(?:n't|\b(?:" + _QUOTE_DECLINES + r")\b))(?=\w)", 3.0),
)

_ABSTAIN_RE = tuple((re.compile(p, _F), w) for p, w in _ABSTAIN_PATTERNS)
_ANSWER_RE = tuple((re.compile(p, _F), w) for p, w in _ANSWER_PATTERNS)

# Leading pleasantries that say nothing about the verdict.
_FILLER_RE = re.compile(
    r"^\W*(?:(?:i'm |i am |so |very )?sorry|apologies|my apologies|good question|great question|interesting question|"
    r"thanks(?: for (?:asking|your question|the question))?|thank you(?: for (?:asking|your question))?|hmm+|um+|"
    r"well|okay|ok|hello|hi(?: there)?|hey|certainly|sure|of course|let me see|let me check|happy to help|"
    r"i see|understood|got it|alright|all right)\W*$", _F)
_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_CLAUSE_SPLIT_RE = re.compile(r"\s*;\s*")
# "I can'ttell you": a trained small policy drops the space after a contraction (seen in PPO's held-out answers)
_GLUED_CONTRACTION_RE = re.compile(r"(?<=n't)(?=[a-z])", re.IGNORECASE)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})

# Tuned on en.jsonl (a grid over scale and offset): prototype logit = SCALE * margin + OFFSET, where
# margin = mean cos to abstention prototypes - mean cos to answer prototypes (its spread there is ~0.03).
PROTO_SCALE = 64.0
PROTO_OFFSET = -1.5
PROTO_CLIP = 3.0
# Without an encoder, a response with no pattern hit leans to "answer" by this prior.
PATTERNS_ONLY_PRIOR = -2.0
_MAX_LEAD_CHARS = 320
_SHORT_LEAD_WORDS = 4

# A lead needs this many words (letters only, two or more) before the prototype term may judge it when no
# abstention pattern fires. MiniLM puts strings such as "asdf", "xk zq" or a tiny policy's byte soup nearer the
# abstention prototypes (scores 0.65-0.77), which made degenerate output a rewarded "refusal".
MIN_PROTOTYPE_WORDS = 3
_WORD_RE = re.compile(r"[A-Za-z]{2,}")

# Prototype sentences per language: (abstention, answer).
PROTOTYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (ABSTENTION_PROTOTYPES, ANSWER_PROTOTYPES),
    "zh": (refusal_zh.ABSTENTION_PROTOTYPES, refusal_zh.ANSWER_PROTOTYPES),
}
# Languages whose responses get the prototype term when an encoder is given. Not Chinese: with the
# embedded all-MiniLM-L6-v2 (English-trained) the Chinese prototype term alone separates zh.jsonl (604
# lines) with AUC 0.77 using means and 0.74 using maxima (English on en.jsonl: 0.94, 0.80). Added to the
# Chinese patterns with the English scale and offset it lowers precision on zh.jsonl from 1.000 to 0.943
# at the same recall (1.000), and on zh_heldout.jsonl from 1.000 to 0.968 (recall 0.992 -> 1.000); on a
# grid of scales 8-128 and offsets -4..4 nothing beats the patterns-only prior on zh.jsonl. So Chinese
# responses are scored by their patterns and PATTERNS_ONLY_PRIOR even with an encoder.
# A multilingual encoder may do better; ``prototype_languages=("en", "zh")`` turns the term on, but
# PROTO_SCALE / PROTO_OFFSET would need re-tuning for it first.
PROTOTYPE_LANGUAGES: tuple[str, ...] = ("en",)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _check_language(language: str) -> str:
    if language not in SUPPORTED_LANGUAGES:
        raise HalluguardError(f"the refusal detector has no '{language}' patterns or prototypes"
                              f"{did_you_mean(language, LANGUAGE_SETTINGS)}; supported: "
                              f"{', '.join(SUPPORTED_LANGUAGES)} (or 'auto' to pick per response)")
    return language


def lead_of(response: str, language: str = "en") -> str:
    """The part of ``response`` that decides the verdict: its first substantive sentence.

    Leading pleasantries are skipped, text after a ``;`` is left out, and a lead of fewer than
    four words ("No.", "Unknown.") takes the next sentence along. ``language="zh"`` uses the
    Chinese rules of :func:`halluguard.refusal_zh.lead_of`.
    """
    if language != "en":
        _check_language(language)
        return refusal_zh.lead_of(response)
    text = _GLUED_CONTRACTION_RE.sub(" ", " ".join(response.translate(_APOSTROPHES).split()))
    sentences = [s.strip() for s in _SENT_SPLIT_RE.split(text) if s and s.strip()]
    while len(sentences) > 1 and _FILLER_RE.match(sentences[0]):
        sentences.pop(0)
    if not sentences:
        return ""
    lead = _CLAUSE_SPLIT_RE.split(sentences[0])[0] if ";" in sentences[0] else sentences[0]
    if len(lead.split()) < _SHORT_LEAD_WORDS and len(sentences) > 1:
        lead = f"{lead} {sentences[1]}"
    return lead[:_MAX_LEAD_CHARS]


def pattern_logit(lead: str, language: str = "en") -> float:
    """Log-odds evidence from the patterns: the strongest abstention hit minus the strongest answer hit.

    Taking the strongest hit of each side (not the sum) keeps a response that repeats itself from
    piling up evidence. ``language="zh"`` uses :func:`halluguard.refusal_zh.pattern_logit`.
    """
    if language != "en":
        _check_language(language)
        return refusal_zh.pattern_logit(lead)
    pos = max((w for rx, w in _ABSTAIN_RE if rx.search(lead)), default=0.0)
    neg = max((w for rx, w in _ANSWER_RE if rx.search(lead)), default=0.0)
    return pos - neg


class RefusalDetector:
    """Scores responses for abstention: 1 = clearly declines to answer, 0 = clearly answers."""

    def __init__(self, encoder=None, threshold: float = 0.5, language: str = "auto", skip_decided: bool = False,
                 prototype_languages: Sequence[str] = PROTOTYPE_LANGUAGES):
        """``language``: ``"auto"`` (each response is judged with the patterns of the language
        :func:`halluguard.language.detect_language` finds in it), or ``"en"`` / ``"zh"`` for all responses.

        ``skip_decided``: leave out the (costly) prototype term where the patterns alone are stronger
        than its clip, so it cannot change the verdict at threshold 0.5. Verdicts stay identical; scores
        of those responses are the pattern evidence alone. The builders use it to keep filtering fast.

        ``prototype_languages``: the languages whose responses get the prototype term when there is an
        encoder; the others get the patterns-only prior. The default leaves Chinese out because the
        embedded English encoder does not help there (see ``PROTOTYPE_LANGUAGES``)."""
        if language != "auto":
            _check_language(language)
        for lang in prototype_languages:
            _check_language(lang)
        if not 0.0 <= float(threshold) <= 1.0:
            raise HalluguardError(f"refusal threshold must lie in [0, 1], got {threshold}")
        self.encoder = encoder
        self.threshold = float(threshold)
        self.language = language
        self.prototype_languages = tuple(prototype_languages)
        self._directions: dict[str, np.ndarray] = {}
        # keyed by (language, lead): the same text is judged differently under different patterns
        self._logit_cache: dict[tuple[str, str], float] = {}
        self.skip_decided = skip_decided

    @classmethod
    def from_config(cls, retriever_cfg=None, encoder=None) -> "RefusalDetector":
        """A detector on ``encoder``, or on an encoder built from ``retriever_cfg``; patterns only with neither."""
        if encoder is None and retriever_cfg is not None:
            from halluguard.retrieval import Encoder

            encoder = Encoder.from_config(retriever_cfg)
        return cls(encoder=encoder)

    # ------------------------------------------------------------ scoring

    def language_of(self, response: str) -> str:
        """The language whose patterns judge ``response``: the forced one, or the detected one under ``auto``."""
        return detect_language(response) if self.language == "auto" else self.language

    def _prototype_direction(self, language: str = "en") -> np.ndarray:
        """Mean abstention prototype minus mean answer prototype of ``language`` (encoded once, cached)."""
        if language not in self._directions:
            abstain, answer = PROTOTYPES[_check_language(language)]
            vecs = self.encoder.encode(list(abstain) + list(answer))
            n = len(abstain)
            self._directions[language] = (vecs[:n].mean(axis=0) - vecs[n:].mean(axis=0)).astype(np.float32)
        return self._directions[language]

    def prototype_margins(self, texts: Sequence[str], language: str = "en") -> np.ndarray:
        """Mean cosine to the abstention prototypes minus mean cosine to the answer prototypes."""
        if not texts:
            return np.zeros(0, dtype=np.float64)
        direction = self._prototype_direction(language)
        return (self.encoder.encode(list(texts)) @ direction).astype(np.float64)

    def prototype_logits(self, texts: Sequence[str], language: str = "en") -> np.ndarray:
        """``PROTO_SCALE * margin + PROTO_OFFSET``, clipped to +-``PROTO_CLIP``."""
        margins = self.prototype_margins(texts, language)
        return np.clip(PROTO_SCALE * margins + PROTO_OFFSET, -PROTO_CLIP, PROTO_CLIP)

    def _fresh_logits(self, language: str, leads: list[str]) -> np.ndarray:
        """Pattern logit plus prototype logit (or the patterns-only prior) of ``leads``, all in ``language``."""
        logits = np.array([pattern_logit(lead, language) for lead in leads], dtype=np.float64)
        if self.encoder is None or language not in self.prototype_languages:
            return logits + PATTERNS_ONLY_PRIOR
        # Too few words for the prototype term to mean anything: without an abstention pattern, the prior decides.
        degenerate = np.array([logit <= 0.0 and len(_WORD_RE.findall(lead)) < MIN_PROTOTYPE_WORDS
                               for logit, lead in zip(logits, leads)], dtype=bool)
        logits[degenerate] += PATTERNS_ONLY_PRIOR
        open_ = np.abs(logits) <= PROTO_CLIP if self.skip_decided else np.ones(len(leads), dtype=bool)
        open_ &= ~degenerate
        if open_.any():
            logits[open_] += self.prototype_logits([lead for lead, o in zip(leads, open_) if o], language)
        return logits

    def score(self, responses: Sequence[str]) -> np.ndarray:
        """How much each response is an abstention, in [0, 1]; exactly 0.5 for an empty response."""
        if isinstance(responses, str):
            raise TypeError("score() takes a sequence of responses, not a single string")
        responses = ["" if r is None else str(r) for r in responses]
        out = np.full(len(responses), 0.5, dtype=np.float64)
        keys = []
        for r in responses:
            lang = self.language_of(r)
            keys.append((lang, lead_of(r, lang)))
        live = [i for i, (_, lead) in enumerate(keys) if lead]
        if not live:
            return out
        # Identical leads (a trained policy repeats its refusal a lot) are scored once.
        unique = sorted({keys[i] for i in live})
        where = {key: j for j, key in enumerate(unique)}
        # Leads seen before are not re-encoded: the builders' filters score the same responses
        # several times, and an evaluation scores the same refusal phrasing over and over.
        fresh = [key for key in unique if key not in self._logit_cache]
        if fresh:
            if len(self._logit_cache) > 200_000:
                self._logit_cache.clear()
            # one batch per language, in sorted order: an all-English call encodes exactly what it always did
            for lang in sorted({lang for lang, _ in fresh}):
                leads = [lead for key_lang, lead in fresh if key_lang == lang]
                self._logit_cache.update(zip(((lang, lead) for lead in leads),
                                             self._fresh_logits(lang, leads).tolist()))
        probs = _sigmoid(np.array([self._logit_cache[key] for key in unique], dtype=np.float64))
        out[live] = probs[[where[keys[i]] for i in live]]
        return out

    def is_refusal(self, responses: Sequence[str]) -> np.ndarray:
        """``score >= threshold``, except that an empty response is never a refusal."""
        scores = self.score(responses)
        empty = np.array([not str(r or "").strip() for r in responses], dtype=bool)
        return (scores >= self.threshold) & ~empty

    def __repr__(self) -> str:
        enc = getattr(self.encoder, "name", None) if self.encoder is not None else None
        return f"RefusalDetector(encoder={enc!r}, threshold={self.threshold}, language={self.language!r})"
