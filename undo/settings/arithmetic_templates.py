"""Word-problem templates and slot vocabularies for the arithmetic setting.

This module is pure data: it defines module-level constants only and contains
no logic. The arithmetic dataset generator fills these templates to produce
word problems for a tiny character-level language model trained on a CPU.
Equation-style problems ("23 + 7 = ") are generated elsewhere; everything
here is a word problem.

Slot vocabularies
-----------------
``NAMES``
    Short first names of varied origins, ASCII only. ``{name}`` and
    ``{name2}`` are filled from this tuple; ``{name2}`` is always a second,
    different person from ``{name}``.
``OBJECTS``
    Plural nouns of countable things, filling ``{obj}``.
``CONTAINERS``
    Singular container nouns without an article, filling ``{container}``.
    None starts with a vowel, so "a {container}" always reads correctly.
    Templates never pluralise a container.

Template contract
-----------------
``TRAIN_TEMPLATES`` and ``HELDOUT_TEMPLATES`` map each operation key
(``"add"``, ``"sub"``, ``"mul"``, ``"div"``) to a tuple of templates:
20 training templates and 10 held-out templates per operation. Held-out
templates are used only for evaluation.

* Templates use ``str.format`` placeholders drawn only from ``{name}``,
  ``{name2}``, ``{obj}``, ``{container}``, ``{a}``, ``{b}`` and
  ``{answer}``. Each template contains ``{a}``, ``{b}`` and ``{answer}``
  exactly once, in that order in the text.
* Semantics: ``add``: answer = a + b. ``sub``: answer = a - b (the generator
  guarantees a >= b). ``mul``: answer = a * b. ``div``: answer = a / b; the
  generator builds a = q * b so the answer is whole, ``{a}`` is the dividend
  and ``{b}`` the divisor.
* ``{answer}`` is preceded by a single space and followed by short text
  (never the end of the string, never a digit). The text before
  ``{answer}`` determines the answer: evaluation feeds the model everything
  before ``{answer}`` (including that space) and checks the first number it
  writes.
* Templates are single-line printable ASCII with no digits other than via
  placeholders and no braces other than the placeholders. Filled with
  two-digit numbers and the longest slot values, each stays within 120
  characters.
* Each template's wording makes the operation clear through cue words
  ("more", "in total", "left", "gave away", "each", "times", "equally",
  "shares", "per", ...).
* Held-out templates are worded differently from every training template,
  but reuse cue words and verbs from the training templates of the same
  operation, and avoid cue words that are training cues for another
  operation. No template string appears in both sets.
"""

NAMES: tuple[str, ...] = (
    "Ana",
    "Ben",
    "Chen",
    "Dev",
    "Emma",
    "Farah",
    "Gus",
    "Hana",
    "Ivan",
    "Jon",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Wei",
    "Yara",
    "Zoe",
    "Aiko",
    "Bruno",
    "Chloe",
    "Diego",
    "Elif",
    "Femi",
    "Ines",
    "Kai",
    "Leo",
    "Maya",
    "Noor",
    "Olga",
    "Pablo",
    "Ravi",
    "Sara",
    "Tomas",
    "Amara",
    "Lucas",
    "Mei",
    "Sami",
)

OBJECTS: tuple[str, ...] = (
    "apples",
    "pencils",
    "marbles",
    "stickers",
    "cookies",
    "coins",
    "books",
    "shells",
    "stamps",
    "cards",
    "buttons",
    "crayons",
    "beads",
    "eggs",
    "oranges",
    "carrots",
    "balloons",
    "candles",
    "cupcakes",
    "rocks",
    "blocks",
    "toys",
    "pears",
    "plums",
    "lemons",
    "keys",
    "socks",
    "ribbons",
    "nuts",
    "grapes",
    "muffins",
    "feathers",
    "tickets",
    "spoons",
)

CONTAINERS: tuple[str, ...] = (
    "box",
    "basket",
    "jar",
    "bag",
    "crate",
    "tin",
    "bucket",
    "bowl",
    "drawer",
    "tray",
    "sack",
    "bin",
    "chest",
    "pouch",
    "carton",
    "barrel",
    "case",
    "pot",
    "cup",
    "backpack",
)

TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "There are {a} {obj} in the {container}. {name} adds {b} more {obj}. Now there are {answer} {obj}.",
        "{name} has {a} {obj}. {name2} hands over {b} more. Now {name} has {answer} {obj}.",
        "{name} has {a} {obj} and {name2} has {b} {obj}. Together they have {answer} {obj}.",
        "{name} picked {a} {obj} in the morning and {b} in the afternoon, so {answer} {obj} in total.",
        "One {container} holds {a} {obj}. Another {container} holds {b} {obj}. In total there are {answer} {obj}.",
        "{name} bought {a} {obj}, then bought {b} more. {name} now has {answer} {obj}.",
        "{name} counts {a} {obj} plus {b} {obj}, which makes {answer} {obj}.",
        "{name} found {a} {obj}. Later {name} found {b} more. Altogether {name} found {answer} {obj}.",
        "The {container} had {a} {obj}. {name} put in {b} more, so the {container} has {answer} {obj}.",
        "{name} collects {a} {obj} on Monday and {b} {obj} on Tuesday. That is {answer} {obj} in total.",
        "{name} had {a} {obj} and got {b} more as a gift. Now {name} has {answer} {obj}.",
        "If you add {a} {obj} and {b} {obj}, you get {answer} {obj}.",
        "{name} and {name2} pool their {obj}: {a} and {b}. Together they have {answer} {obj}.",
        "There were {a} {obj} on the table. {name} brought {b} more. How many now? {answer} {obj}.",
        "{name} read {a} pages on Monday and {b} pages on Tuesday, {answer} pages in total.",
        "{name} scored {a} points, then {b} more points, for a total of {answer} points.",
        "The class made {a} {obj} and the teacher made {b} more. The sum is {answer} {obj}.",
        "{name} needs {a} {obj} for one game and {b} {obj} for another, so {answer} {obj} altogether.",
        "{name} puts {a} {obj} on the shelf. {name2} adds {b} {obj}. The shelf now holds {answer} {obj}.",
        "{name} saved {a} coins and earned {b} more coins. Now {name} has {answer} coins in total.",
    ),
    "sub": (
        "{name} had {a} {obj} and gave away {b}. {name} has {answer} {obj} left.",
        "There are {a} {obj} in the {container}. {name} takes out {b}. Now there are {answer} {obj} in the {container}.",
        "{name} has {a} {obj}. {name} eats {b} of them. Then {answer} {obj} are left.",
        "{name} bought {a} {obj} and lost {b} on the way home, leaving {answer} {obj}.",
        "A shop had {a} {obj} and sold {b}. The shop has {answer} {obj} left.",
        "{name} has {a} {obj} and {name2} has {b} {obj}. The difference is {answer} {obj}.",
        "{name} started with {a} {obj}. After giving {b} to {name2}, {name} has {answer} {obj} left.",
        "Out of {a} {obj}, {b} were broken. Then {answer} {obj} were not broken.",
        "{a} {obj} minus {b} {obj} leaves {answer} {obj}.",
        "The {container} held {a} {obj}. {name} used {b} of them, so {answer} {obj} remain.",
        "{name} had {a} coins and spent {b} coins on lunch. {name} has {answer} coins left.",
        "{name} picked {a} {obj}, but {b} were bad and thrown away. Only {answer} good {obj} remain.",
        "There were {a} {obj} on the table. {name} took {b}. How many are left? {answer} {obj}.",
        "{name} needs {a} {obj} and already has {b}. {name} still needs {answer} {obj}.",
        "A bus had {a} people. At the stop, {b} got off. Now {answer} people are on the bus.",
        "{name} owns {a} {obj}. {name} gives away {b} {obj} and keeps {answer} {obj}.",
        "The difference between {a} {obj} and {b} {obj} is {answer} {obj}.",
        "{name} had {a} {obj} in a {container}. Then {b} fell out. Only {answer} {obj} are left in the {container}.",
        "From a {container} of {a} {obj}, {name} removes {b}. That leaves {answer} {obj}.",
        "{name} had {a} points and lost {b} points. {name} now has {answer} points.",
    ),
    "mul": (
        "{name} has {a} bags with {b} {obj} in each bag. That is {answer} {obj} in all.",
        "There are {a} rows of {obj} with {b} {obj} in every row. There are {answer} {obj} in all.",
        "{name} buys {a} packs of {obj}. Each pack has {b} {obj}. {name} buys {answer} {obj} in all.",
        "There are {a} groups of {b} {obj}. The groups hold {answer} {obj} in all.",
        "{name} fills {a} plates and puts {b} {obj} on each plate. That is {answer} {obj} in all.",
        "Each of {a} children has {b} {obj}. The children have {answer} {obj} in all.",
        "{name} reads {a} pages a day for {b} days. {name} reads {answer} pages in all.",
        "One {container} holds {a} {obj}. How many {obj} are in {b} of them? {answer} {obj}.",
        "{name} walks {a} miles every day for {b} days, {answer} miles in all.",
        "There are {a} teams with {b} players each, so there are {answer} players in all.",
        "{name} has {a} {obj}, and {name2} has {b} times as many. {name2} has {answer} {obj}.",
        "{name} plants {a} rows of trees with {b} trees in each row, {answer} trees in all.",
        "{name} packs {a} {obj} into every {container} and fills {b} of them. {name} packs {answer} {obj}.",
        "{a} {obj} multiplied by {b} is {answer} {obj}.",
        "A ticket costs {a} coins. {name} buys {b} tickets and pays {answer} coins.",
        "There are {a} shelves and each shelf holds {b} {obj}. The shelves hold {answer} {obj}.",
        "{name} earns {a} coins each week. After {b} weeks {name} has earned {answer} coins.",
        "In a hall there are {a} tables with {b} chairs at each table, {answer} chairs in all.",
        "{name} counts {a} carts with {b} wheels each, {answer} wheels in all.",
        "What is {a} times {b}? The product is {answer}.",
    ),
    "div": (
        "{name} shares {a} {obj} equally among {b} friends. Each friend gets {answer} {obj}.",
        "{name} splits {a} {obj} equally into {b} piles. Each pile has {answer} {obj}.",
        "{name} has {a} {obj} and puts {b} in each bag. {name} fills {answer} bags.",
        "{a} {obj} divided equally into {b} groups is {answer} {obj} per group.",
        "There are {a} {obj} to share among {b} kids. Each kid gets {answer} {obj}.",
        "{name} cuts a rope {a} metres long into {b} equal pieces. Each piece is {answer} metres long.",
        "The teacher splits {a} students into {b} equal teams. Each team has {answer} students.",
        "{name} packs {a} {obj} into bags of {b}. That fills {answer} bags.",
        "{a} {obj} are shared equally by {b} children, so each child gets {answer} {obj}.",
        "A {container} of {a} {obj} is split among {b} people. Each person gets {answer} {obj}.",
        "{name} pays {a} coins for {b} tickets. One ticket costs {answer} coins.",
        "{name} has {a} {obj} to put equally into {b} stacks. Each stack has {answer} {obj}.",
        "If {a} {obj} are divided among {b} friends, each friend gets {answer} {obj}.",
        "{name} reads {a} pages in {b} days, the same number each day. That is {answer} pages per day.",
        "{a} {obj} fit equally on {b} shelves, so each shelf holds {answer} {obj}.",
        "{name} drives {a} miles in {b} hours at a steady speed, {answer} miles per hour.",
        "{name} splits {a} {obj} evenly among {b} cousins. Each cousin receives {answer} {obj}.",
        "{a} {obj} are put into {b} equal piles. One pile has {answer} {obj}.",
        "{name} packs {a} {obj}, {b} per {container}, and fills {answer} of them.",
        "What is {a} divided by {b}? It is {answer}.",
    ),
}

HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "In the {container} are {a} {obj}, and {name} adds {b} more. The {container} now has {answer} {obj}.",
        "Put together, {a} {obj} and {b} {obj} come to {answer} {obj}.",
        "What is the sum of {a} {obj} and {b} {obj}? It is {answer} {obj}.",
        "{name} has {a} {obj}. After buying {b} more, {name} has {answer} {obj} altogether.",
        "{a} {obj} sit in one {container} and {b} in another. The total is {answer} {obj}.",
        "After finding {a} {obj} and then {b} more, {name} has {answer} {obj}.",
        "{name} starts with {a} {obj}. {name2} adds {b} {obj}. In total {name} now has {answer} {obj}.",
        "Adding {a} {obj} to {b} {obj} makes {answer} {obj} altogether.",
        "{name} scored {a} points and {name2} scored {b} points. Their total is {answer} points.",
        "How many {obj} do {name} and {name2} have together if one has {a} and the other has {b}? {answer} {obj}.",
    ),
    "sub": (
        "Of the {a} {obj} {name} had, {name} gave away {b}, so {answer} {obj} are left.",
        "There were {a} {obj} in the {container} until {name} took out {b}. Now {answer} {obj} remain.",
        "{name} had {a} {obj}. Once {b} were eaten, only {answer} {obj} were left.",
        "Start with {a} {obj} and take away {b}. The result is {answer} {obj}.",
        "The shop began the day with {a} {obj}. By night it had sold {b}, so {answer} {obj} were left.",
        "With {a} coins, {name} spent {b} coins, so {answer} coins remain.",
        "How many {obj} remain if {name} has {a} and loses {b}? Only {answer} {obj}.",
        "Take {a} {obj}, use {b} of them, and {answer} {obj} remain.",
        "{name2} has {a} {obj} and gives {b} to {name}. {name2} is left with {answer} {obj}.",
        "How big is the difference if {name} has {a} {obj} and {name2} has {b}? It is {answer} {obj}.",
    ),
    "mul": (
        "In each of {a} bags {name} puts {b} {obj}, so {name} has {answer} {obj} in all.",
        "How many {obj} are in {a} rows of {b}? There are {answer} {obj}.",
        "{a} {obj} taken {b} times over comes to {answer} {obj}.",
        "There are {a} children who each have {b} {obj}. In all, the children have {answer} {obj}.",
        "Every day for {a} days, {name} reads {b} pages. That is {answer} pages in all.",
        "Count {a} groups of {b} {obj} and you have {answer} {obj} in all.",
        "{name} buys {a} tickets at {b} coins a ticket and pays {answer} coins.",
        "There are {a} plates, and every plate has {b} {obj} on it, so {answer} {obj} are on the plates.",
        "The product of {a} and {b} is {answer}.",
        "On a team of {a} players, every player scores {b} points, so the team scores {answer} points.",
    ),
    "div": (
        "{name} has {a} {obj}, split equally among {b} friends. One friend's share is {answer} {obj}.",
        "Sharing {a} {obj} among {b} kids means {answer} {obj} per kid.",
        "After {name} divides {a} {obj} into {b} equal piles, how many are in one pile? {answer} {obj}.",
        "The cost is {a} coins for {b} tickets, or {answer} coins per ticket.",
        "If {name} shares {a} {obj} among {b} children equally, how many does one child get? {answer} {obj}.",
        "Dividing {a} {obj} equally into {b} stacks results in {answer} {obj} per stack.",
        "{name} drove {a} miles in {b} hours. Per hour, that is {answer} miles.",
        "Splitting {a} students into {b} equal teams puts {answer} students on one team.",
        "{name} cut {a} metres of rope into {b} equal pieces. How long is one piece? {answer} metres.",
        "{name} has {a} {obj} to share. With {b} friends sharing equally, a friend gets {answer} {obj}.",
    ),
}
