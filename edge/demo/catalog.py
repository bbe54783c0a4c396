"""The demo shop's catalogue: four categories of twelve products, declared as code.

Prices are integer cents so that totals never suffer float rounding; the euro
strings a visitor sees are derived from them in one place (`format_euro`).
"""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path

import msgspec

__all__ = [
    "CATEGORIES",
    "CATEGORIES_BY_SLUG",
    "FREE_SHIPPING_FROM",
    "PRODUCTS",
    "PRODUCTS_BY_ID",
    "PRODUCTS_BY_SLUG",
    "SHIPPING_COST",
    "Category",
    "Product",
    "format_euro",
    "products_in",
    "search_products",
    "slugify",
]

# Orders of at least this much ship free; below it a flat fee applies.
FREE_SHIPPING_FROM = 7900
SHIPPING_COST = 490


class Category(msgspec.Struct, frozen=True):
    slug: str
    name: str
    blurb: str


class Product(msgspec.Struct, frozen=True):
    id: str
    slug: str
    name: str
    brand: str
    category: str  # a Category.slug
    price: int  # euro cents
    description: str
    material: str
    colour: str  # "#rrggbb", drives the product's drawn illustration
    badge: str = ""  # "Novità", "Bestseller", … shown on the card

    @property
    def price_euro(self) -> str:
        """The price as a plain decimal string in euros ("89.90"), for data attributes."""
        return f"{self.price // 100}.{self.price % 100:02d}"


def format_euro(cents: int) -> str:
    """Italian money format: `€ 1.249,90`."""
    euros, rest = divmod(cents, 100)
    return f"€ {euros:,}".replace(",", ".") + f",{rest:02d}"


def _fold(text: str) -> str:
    """Lower case without accents, so "decollete" finds "Décolleté"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _fold(text)).strip("-")


CATEGORIES: tuple[Category, ...] = (
    Category(
        "scarpe-donna",
        "Scarpe donna",
        "Décolleté, sneaker e stivaletti fatti a mano nelle Marche e in Toscana.",
    ),
    Category(
        "scarpe-uomo",
        "Scarpe uomo",
        "Stringate con cucitura Goodyear, mocassini e sneaker per ogni giorno.",
    ),
    Category(
        "borse-accessori",
        "Borse & accessori",
        "Pelletteria del Valdarno, sciarpe in cashmere e i dettagli che fanno lo stile.",
    ),
    Category(
        "casa-cucina",
        "Casa & cucina",
        "Oggetti per la tavola e la cucina, scelti per durare e per essere usati.",
    ),
)

CATEGORIES_BY_SLUG: dict[str, Category] = {c.slug: c for c in CATEGORIES}


def _product(
    number: int,
    name: str,
    brand: str,
    category: str,
    price: int,
    material: str,
    colour: str,
    description: str,
    badge: str = "",
) -> Product:
    return Product(
        id=f"p{number}",
        slug=slugify(name),
        name=name,
        brand=brand,
        category=category,
        price=price,
        description=description,
        material=material,
        colour=colour,
        badge=badge,
    )


PRODUCTS: tuple[Product, ...] = (
    # Scarpe donna
    _product(
        1001,
        "Décolleté Lucia",
        "Ferri Calzature",
        "scarpe-donna",
        12990,
        "Camoscio",
        "#7a2e3a",
        "Décolleté in camoscio con tacco a spillo da 8 cm e punta affusolata. "
        "Soletta imbottita in lattice, per arrivare a fine serata.",
        "Bestseller",
    ),
    _product(
        1002,
        "Sneaker Aria",
        "Passo Leggero",
        "scarpe-donna",
        8990,
        "Pelle di vitello",
        "#d9d2c5",
        "Sneaker bassa in pelle bianca con suola in gomma riciclata e "
        "inserto a contrasto sul tallone.",
    ),
    _product(
        1003,
        "Mocassino Greta",
        "Ferri Calzature",
        "scarpe-donna",
        10990,
        "Pelle spazzolata",
        "#5b3a29",
        "Mocassino in pelle spazzolata con morsetto dorato e suola in cuoio cucita a mano.",
    ),
    _product(
        1004,
        "Stivaletto Nives",
        "Lunaria",
        "scarpe-donna",
        15990,
        "Pelle liscia",
        "#262424",
        "Stivaletto alla caviglia con tacco a blocco da 5 cm e zip laterale. "
        "Fodera in pelle, sottopiede estraibile.",
        "Novità",
    ),
    _product(
        1005,
        "Sandalo Capri",
        "Marta Ricci",
        "scarpe-donna",
        7490,
        "Pelle naturale",
        "#c08a4d",
        "Sandalo flat con listini intrecciati e fibbia alla caviglia, cucito a mano in Costiera.",
    ),
    _product(
        1006,
        "Ballerina Viola",
        "Lunaria",
        "scarpe-donna",
        6990,
        "Nappa",
        "#6d4c7d",
        "Ballerina in nappa morbida con piccolo fiocco, pianta comoda e "
        "suola flessibile per camminare tutto il giorno.",
    ),
    _product(
        1007,
        "Espadrilla Marea",
        "Passo Leggero",
        "scarpe-donna",
        4990,
        "Tela di cotone",
        "#3f6e8c",
        "Espadrilla in tela di cotone con suola in corda di juta e plantare ammortizzato.",
    ),
    _product(
        1008,
        "Stivale Dolomia",
        "Ferri Calzature",
        "scarpe-donna",
        23900,
        "Pelle ingrassata",
        "#4a3122",
        "Stivale al ginocchio in pelle ingrassata, fodera calda e suola in "
        "gomma antiscivolo per l'inverno in città.",
    ),
    _product(
        1009,
        "Slingback Irene",
        "Marta Ricci",
        "scarpe-donna",
        11990,
        "Vernice",
        "#b23a48",
        "Slingback in vernice con tacco kitten da 4 cm e cinturino elastico regolabile.",
        "Novità",
    ),
    _product(
        1010,
        "Mule Selene",
        "Lunaria",
        "scarpe-donna",
        8490,
        "Velluto",
        "#2f5d50",
        "Mule in velluto con punta quadrata e tacco scultoreo da 6 cm.",
    ),
    _product(
        1011,
        "Sneaker Brezza",
        "Passo Leggero",
        "scarpe-donna",
        9990,
        "Mesh tecnico",
        "#e07a5f",
        "Running leggera in mesh traspirante con intersuola reattiva, per uscite fino a 10 km.",
    ),
    _product(
        1012,
        "Sabot Ortensia",
        "Marta Ricci",
        "scarpe-donna",
        5990,
        "Legno di tiglio e pelle",
        "#8e9aaf",
        "Sabot con base in legno di tiglio, tomaia in pelle con borchie e "
        "fondo in gomma silenziosa.",
    ),
    # Scarpe uomo
    _product(
        1013,
        "Oxford Vittorio",
        "Officina Sartori",
        "scarpe-uomo",
        18900,
        "Vitello spazzolato",
        "#3b2418",
        "Oxford con cucitura Goodyear e suola in cuoio risuolabile. Forma classica, pianta media.",
        "Bestseller",
    ),
    _product(
        1014,
        "Derby Ettore",
        "Calzaturificio Brenta",
        "scarpe-uomo",
        14900,
        "Pelle martellata",
        "#5a2e1c",
        "Derby in pelle martellata con suola in gomma Vibram, da ufficio e da pioggia.",
    ),
    _product(
        1015,
        "Mocassino Porto",
        "Calzaturificio Brenta",
        "scarpe-uomo",
        9990,
        "Pelle scamosciata",
        "#2d4a6b",
        "Mocassino da barca in camoscio idrorepellente con lacci in cuoio e "
        "suola bianca che non segna.",
    ),
    _product(
        1016,
        "Sneaker Campo",
        "Nordpass",
        "scarpe-uomo",
        7990,
        "Pelle e suede",
        "#f1ede4",
        "Sneaker stile tennis anni '70 con riporti in suede e suola in gomma cupsole.",
    ),
    _product(
        1017,
        "Chelsea Boot Aldo",
        "Officina Sartori",
        "scarpe-uomo",
        19900,
        "Camoscio",
        "#6b4a2b",
        "Chelsea in camoscio con elastici laterali e suola commando, fatto a mano a Montegranaro.",
        "Novità",
    ),
    _product(
        1018,
        "Polacchino Sabbia",
        "Ferri Calzature",
        "scarpe-uomo",
        12900,
        "Suede",
        "#c2a878",
        "Desert boot in suede color sabbia con suola in para naturale.",
    ),
    _product(
        1019,
        "Scarponcino Cresta",
        "Nordpass",
        "scarpe-uomo",
        16900,
        "Nubuck e membrana impermeabile",
        "#55613b",
        "Scarponcino da trekking leggero con membrana impermeabile e "
        "battistrada scolpito per sentieri misti.",
    ),
    _product(
        1020,
        "Monk Strap Lorenzo",
        "Officina Sartori",
        "scarpe-uomo",
        21900,
        "Vitello anticato",
        "#7b3f22",
        "Doppia fibbia in vitello anticato a mano, suola in cuoio con gommino di sicurezza.",
    ),
    _product(
        1021,
        "Sneaker Vento",
        "Nordpass",
        "scarpe-uomo",
        10990,
        "Mesh e TPU",
        "#3d5a80",
        "Runner da città con tomaia in mesh, inserti riflettenti e "
        "intersuola in EVA ad alto ritorno.",
    ),
    _product(
        1022,
        "Pantofola Feltro",
        "Calzaturificio Brenta",
        "scarpe-uomo",
        3990,
        "Feltro di lana",
        "#7d7d7d",
        "Pantofola in feltro di lana cotta con suola in gomma sottile, calda e silenziosa.",
    ),
    _product(
        1023,
        "Brogue Milano",
        "Ferri Calzature",
        "scarpe-uomo",
        16500,
        "Vitello",
        "#8a4b2a",
        "Stringata brogue con coda di rondine e punta traforata, fondo in cuoio.",
    ),
    _product(
        1024,
        "Sandalo Tirreno",
        "Nordpass",
        "scarpe-uomo",
        5490,
        "Cuoio e sughero",
        "#a0522d",
        "Sandalo a due fasce in cuoio con plantare anatomico in sughero.",
    ),
    # Borse & accessori
    _product(
        1025,
        "Borsa a spalla Fiorenza",
        "Valdarno",
        "borse-accessori",
        24900,
        "Pelle conciata al vegetale",
        "#9c4a2f",
        "Borsa a spalla in pelle conciata al vegetale, tasca interna con "
        "zip e tracolla regolabile.",
        "Bestseller",
    ),
    _product(
        1026,
        "Tote Mercato",
        "Atelier Ponte",
        "borse-accessori",
        8900,
        "Canvas e pelle",
        "#d4b483",
        "Tote capiente in canvas pesante con manici in pelle, per il mercato e il computer.",
    ),
    _product(
        1027,
        "Zaino Città",
        "Atelier Ponte",
        "borse-accessori",
        11900,
        "Nylon riciclato",
        "#34495e",
        "Zaino da 18 litri in nylon riciclato con scomparto imbottito per "
        'laptop da 15" e tasca antifurto.',
    ),
    _product(
        1028,
        "Pochette Serata",
        "Valdarno",
        "borse-accessori",
        7900,
        "Pelle laminata",
        "#b8a26a",
        "Pochette in pelle laminata con catena rimovibile, chiusura magnetica.",
    ),
    _product(
        1029,
        "Portafoglio Compatto",
        "Valdarno",
        "borse-accessori",
        5900,
        "Pelle saffiano",
        "#1f3a5f",
        "Portafoglio compatto con otto tasche per carte, portamonete con zip e protezione RFID.",
    ),
    _product(
        1030,
        "Cintura Toscana",
        "Valdarno",
        "borse-accessori",
        4900,
        "Cuoio",
        "#6e3b1f",
        "Cintura in cuoio da 3,5 cm con fibbia in ottone massiccio.",
    ),
    _product(
        1031,
        "Sciarpa Nebbia",
        "Lanificio Serra",
        "borse-accessori",
        12900,
        "Cashmere",
        "#a9a9b3",
        "Sciarpa in puro cashmere tessuta a Biella, 180 × 30 cm, con frange annodate a mano.",
        "Novità",
    ),
    _product(
        1032,
        "Cappello Fedora Ombra",
        "Lanificio Serra",
        "borse-accessori",
        8900,
        "Feltro di lana",
        "#3e3a36",
        "Fedora in feltro di lana con nastro gros-grain e tesa da 6 cm.",
    ),
    _product(
        1033,
        "Guanti Inverno",
        "Atelier Ponte",
        "borse-accessori",
        6900,
        "Nappa e cashmere",
        "#4b2e2a",
        "Guanti in nappa foderati in cashmere, compatibili con lo schermo del telefono.",
    ),
    _product(
        1034,
        "Borsa Weekend Viaggio",
        "Atelier Ponte",
        "borse-accessori",
        28900,
        "Pelle e tela cerata",
        "#556b2f",
        "Borsone da 40 litri in tela cerata e pelle, misura bagaglio a mano.",
    ),
    _product(
        1035,
        "Occhiali da sole Riva",
        "Lumen Ottica",
        "borse-accessori",
        13900,
        "Acetato",
        "#2b2b2b",
        "Occhiali in acetato italiano con lenti polarizzate categoria 3 e astuccio in pelle.",
    ),
    _product(
        1036,
        "Foulard Giardino",
        "Lanificio Serra",
        "borse-accessori",
        6500,
        "Seta",
        "#c06c84",
        "Foulard in twill di seta stampato a Como, 90 × 90 cm, orli arrotolati a mano.",
    ),
    # Casa & cucina
    _product(
        1037,
        "Moka Classica 6 tazze",
        "Cucina Moretti",
        "casa-cucina",
        3490,
        "Alluminio",
        "#8d99ae",
        "Moka in alluminio da 6 tazze con valvola di sicurezza ispezionabile "
        "e manico in bachelite.",
        "Bestseller",
    ),
    _product(
        1038,
        "Padella antiaderente 28 cm",
        "Cucina Moretti",
        "casa-cucina",
        4590,
        "Alluminio e pietra",
        "#303030",
        "Padella con rivestimento minerale senza PFAS, adatta anche a induzione.",
    ),
    _product(
        1039,
        "Set 4 piatti Ardesia",
        "Nordlys Home",
        "casa-cucina",
        5990,
        "Gres porcellanato",
        "#5c6b73",
        "Quattro piatti piani in gres smaltato a mano, lavabili in lavastoviglie.",
    ),
    _product(
        1040,
        "Tovaglia Mezzadro",
        "Lino & Co",
        "casa-cucina",
        6900,
        "Lino lavato",
        "#a3b18a",
        "Tovaglia in lino lavato 160 × 250 cm, per otto coperti, non si stira.",
    ),
    _product(
        1041,
        "Candela profumata Fico",
        "Nordlys Home",
        "casa-cucina",
        2490,
        "Cera di soia",
        "#6a994e",
        "Candela in cera di soia con note di foglia di fico, 50 ore di combustione.",
    ),
    _product(
        1042,
        "Plaid Fjord",
        "Nordlys Home",
        "casa-cucina",
        8900,
        "Lana merino",
        "#b5838d",
        "Plaid in lana merino 130 × 180 cm a trama spina di pesce.",
        "Novità",
    ),
    _product(
        1043,
        "Tagliere in ulivo",
        "Cucina Moretti",
        "casa-cucina",
        3990,
        "Legno di ulivo",
        "#9c6644",
        "Tagliere in un unico pezzo di legno di ulivo, trattato con olio alimentare.",
    ),
    _product(
        1044,
        "Caraffa Onda",
        "Nordlys Home",
        "casa-cucina",
        2990,
        "Vetro soffiato",
        "#90c2d6",
        "Caraffa da un litro in vetro soffiato a bocca, con beccuccio anti-goccia.",
    ),
    _product(
        1045,
        "Set 6 bicchieri Aperitivo",
        "Nordlys Home",
        "casa-cucina",
        3290,
        "Vetro",
        "#e9c46a",
        "Sei bicchieri bassi in vetro colorato, per lo spritz e l'acqua di tutti i giorni.",
    ),
    _product(
        1046,
        "Brasiera in ghisa 24 cm",
        "Cucina Moretti",
        "casa-cucina",
        12900,
        "Ghisa smaltata",
        "#bc4b51",
        "Brasiera in ghisa smaltata con coperchio autobasting, per arrosti e ragù della domenica.",
    ),
    _product(
        1047,
        "Cuscino Salvia",
        "Lino & Co",
        "casa-cucina",
        3490,
        "Lino",
        "#8fa98f",
        "Fodera in lino 45 × 45 cm con imbottitura in piuma, chiusura a bottoni.",
    ),
    _product(
        1048,
        "Macchina per pasta Sfoglia",
        "Cucina Moretti",
        "casa-cucina",
        7990,
        "Acciaio cromato",
        "#adb5bd",
        "Macchina per la pasta a manovella con rulli da 150 mm e nove "
        "spessori, per sfoglia, tagliatelle e lasagne.",
    ),
)

PRODUCTS_BY_ID: dict[str, Product] = {p.id: p for p in PRODUCTS}
PRODUCTS_BY_SLUG: dict[str, Product] = {p.slug: p for p in PRODUCTS}

# A typo in the data above should fail at import, not as a wrong page.
if not len(PRODUCTS_BY_ID) == len(PRODUCTS_BY_SLUG) == len(PRODUCTS):
    raise RuntimeError("demo catalogue: product ids and slugs must be unique")
if any(p.category not in CATEGORIES_BY_SLUG for p in PRODUCTS):
    raise RuntimeError("demo catalogue: a product names an unknown category")


def products_in(category_slug: str) -> tuple[Product, ...]:
    return tuple(p for p in PRODUCTS if p.category == category_slug)


def search_products(query: str) -> tuple[Product, ...]:
    """Products whose name, brand, category or material contain every word of `query`.

    Words shorter than two letters are dropped, since "a" or "e" would match
    everything. Products with a word in the name come first.
    """
    words = [w for w in re.split(r"\W+", _fold(query)) if len(w) >= 2]
    if not words:
        return ()
    found: list[tuple[bool, Product]] = []
    for product in PRODUCTS:
        category = CATEGORIES_BY_SLUG[product.category]
        haystack = _fold(f"{product.name} {product.brand} {category.name} {product.material}")
        if all(w in haystack for w in words):
            in_name = any(w in _fold(product.name) for w in words)
            found.append((not in_name, product))
    found.sort(key=lambda hit: hit[0])
    return tuple(product for _, product in found)


def write_feed(path: str | Path) -> Path:
    """The catalogue as a product feed (CSV: id, category, brand, price, name, url),
    as a merchant would export it for the sidecar."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "category", "brand", "price", "name", "url"])
        for p in PRODUCTS:
            writer.writerow([p.id, p.category, p.brand, p.price_euro, p.name, f"/p/{p.slug}"])
    return path
