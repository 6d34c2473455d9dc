//! Calendar dates (business dates, UTC) and server timestamps (microseconds, UTC).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A calendar day between 0001-01-01 and 9999-12-31.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(jiff::civil::Date);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a calendar date written YYYY-MM-DD (years 0001 to 9999)")]
pub struct InvalidDate(pub String);

impl Date {
    pub fn new(year: i16, month: i8, day: i8) -> Result<Date, InvalidDate> {
        let invalid = || InvalidDate(format!("{year:04}-{month:02}-{day:02}"));
        if !(1..=9999).contains(&year) {
            return Err(invalid());
        }
        jiff::civil::Date::new(year, month, day).map(Date).map_err(|_| invalid())
    }

    /// Parses exactly `YYYY-MM-DD`: no time, no week dates, no basic format, no padding.
    pub fn parse(text: &str) -> Result<Date, InvalidDate> {
        let invalid = || InvalidDate(text.to_string());
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
            return Err(invalid());
        }
        let number = |r: std::ops::Range<usize>| text[r].parse::<i16>().map_err(|_| invalid());
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        Date::new(year, month as i8, day as i8).map_err(|_| invalid())
    }

    pub fn year(self) -> i16 {
        self.0.year()
    }

    pub fn month(self) -> i8 {
        self.0.month()
    }

    pub fn day(self) -> i8 {
        self.0.day()
    }

    /// Days from `self` to `later` (negative when `later` is earlier).
    pub fn days_until(self, later: Date) -> i64 {
        // Whole days between two civil dates: exact, no time zone involved. Integer
        // arithmetic (revenue asks this for every tranche of every period of every contract).
        later.epoch_day() - self.epoch_day()
    }

    /// Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's
    /// `days_from_civil`: years counted from March, so the leap day ends a year).
    fn epoch_day(self) -> i64 {
        let (month, day) = (i64::from(self.month()), i64::from(self.day()));
        let year = i64::from(self.year()) - i64::from(month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// The date of an epoch day ([`Date::epoch_day`]'s inverse, H. Hinnant's
    /// `civil_from_days`), if it is within the supported range.
    fn of_epoch_day(epoch_day: i64) -> Option<Date> {
        let shifted = epoch_day.checked_add(719_468)?;
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted - era * 146_097;
        let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        Date::new(i16::try_from(year).ok()?, month as i8, day as i8).ok()
    }

    /// The date `days` after this one, if it is within the supported range.
    pub fn add_days(self, days: i64) -> Option<Date> {
        Date::of_epoch_day(self.epoch_day().checked_add(days)?)
    }

    /// The last day of a month of a supported year (`None` for any other year or month),
    /// without date arithmetic (period walks call it once per period).
    pub fn last_of(year: i16, month: i8) -> Option<Date> {
        Some(Date::new(year, month, 1).ok()?.last_of_month())
    }

    pub fn first_of_month(self) -> Date {
        Date(self.0.first_of_month())
    }

    pub fn last_of_month(self) -> Date {
        Date(self.0.last_of_month())
    }

    /// `YYYY-MM-DD`, written into `out` (years are 1 to 9999: four digits).
    pub fn write_iso<'a>(&self, out: &'a mut [u8; 10]) -> &'a str {
        let digit = |n: i32, place: i32| b'0' + ((n / place) % 10) as u8;
        let (year, month, day) = (i32::from(self.year()), i32::from(self.month()), i32::from(self.day()));
        *out = [digit(year, 1000), digit(year, 100), digit(year, 10), digit(year, 1), b'-', digit(month, 10), digit(month, 1), b'-', digit(day, 10), digit(day, 1)];
        std::str::from_utf8(out).expect("ASCII digits and dashes")
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write_iso(&mut [0; 10]))
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Date {
    type Err = InvalidDate;
    fn from_str(s: &str) -> Result<Date, InvalidDate> {
        Date::parse(s)
    }
}

/// JSON: `"2026-06-01"`. Canonical bytes: year (u16 varint), month (u8), day (u8).
impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            // Written by hand, not through `Display`'s formatting machinery: dates are in
            // every event line an export writes and a bundle verification writes again.
            s.serialize_str(self.write_iso(&mut [0; 10]))
        } else {
            // Years are 1..=9999, so the cast is lossless.
            (self.year() as u16, self.month() as u8, self.day() as u8).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = Date;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a date as a string YYYY-MM-DD")
                }
                fn visit_str<E: Error>(self, v: &str) -> Result<Date, E> {
                    Date::parse(v).map_err(E::custom)
                }
            }
            d.deserialize_str(Visitor)
        } else {
            let (year, month, day) = <(u16, u8, u8)>::deserialize(d)?;
            let (year, month, day) = (
                i16::try_from(year).map_err(D::Error::custom)?,
                i8::try_from(month).map_err(D::Error::custom)?,
                i8::try_from(day).map_err(D::Error::custom)?,
            );
            Date::new(year, month, day).map_err(D::Error::custom)
        }
    }
}

/// A server time: microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn micros(self) -> i64 {
        self.0
    }

    /// RFC 3339 in UTC with exactly six fractional digits: `2026-11-28T02:51:03.123456Z`.
    pub fn to_rfc3339(self) -> String {
        match jiff::Timestamp::from_microsecond(self.0) {
            Ok(t) => format!("{}", t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ")),
            Err(_) => format!("@{}us", self.0),
        }
    }

    /// The calendar date (UTC) this instant falls on; `None` outside the years 1-9999.
    pub fn date(self) -> Option<Date> {
        let t = jiff::Timestamp::from_microsecond(self.0).ok()?;
        let d = jiff::tz::Offset::UTC.to_datetime(t).date();
        Date::new(d.year(), d.month(), d.day()).ok()
    }

    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        text.parse::<jiff::Timestamp>().ok().map(|t| Timestamp(t.as_microsecond()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_strict_form() {
        assert_eq!(Date::parse("2026-06-01").unwrap().to_string(), "2026-06-01");
        assert_eq!(Date::parse("2028-02-29").unwrap().to_string(), "2028-02-29");
        for bad in ["2026-6-01", "20260601", "2026-02-30", "2027-02-29", "2026-13-01", "0000-01-01",
                    "2026-06-01T00:00", " 2026-06-01", "2026-W22-1", "+2026-06-01", "2026-00-10", "2026-06-00", "٢٠٢٦-06-01"] {
            assert!(Date::parse(bad).is_err(), "{bad}");
        }
    }

    /// Dates are written as jiff writes them (`YYYY-MM-DD`, four-digit years), in text and
    /// in JSON, at the ends of the range and across it.
    #[test]
    fn dates_are_written_as_iso_8601() {
        let mut day = Date::new(1, 1, 1).unwrap();
        let mut written = 0;
        while let Some(next) = day.add_days(if day.year() < 30 || day.year() > 9970 { 1 } else { 97 }) {
            assert_eq!(day.to_string(), day.0.to_string());
            assert_eq!(serde_json::to_string(&day).unwrap(), format!("\"{}\"", day.0));
            written += 1;
            day = next;
        }
        assert_eq!(day, Date::new(9999, 12, 31).unwrap());
        assert_eq!(serde_json::to_string(&day).unwrap(), "\"9999-12-31\"");
        assert!(written > 30_000, "{written}");
    }

    /// The integer day arithmetic agrees with jiff's calendar on every day of the range
    /// dates take (years 1 to 9999), and stops at its ends.
    #[test]
    fn day_arithmetic_agrees_with_the_calendar() {
        let first = Date::new(1, 1, 1).unwrap();
        let mut day = first;
        let mut count = 0;
        while let Ok(next) = day.0.tomorrow() {
            let next = Date(next);
            if next.year() > 9999 {
                break;
            }
            count += 1;
            assert_eq!(day.add_days(1), Some(next), "{day}");
            assert_eq!(next.add_days(-1), Some(day), "{next}");
            assert_eq!(day.days_until(next), 1, "{day}");
            assert_eq!(first.days_until(next), count, "{next}");
            assert_eq!(first.add_days(count), Some(next));
            assert_eq!(Date::last_of(day.year(), day.month()), Some(day.last_of_month()), "{day}");
            day = next;
        }
        assert_eq!(day, Date::new(9999, 12, 31).unwrap());
        assert_eq!((day.add_days(1), first.add_days(-1)), (None, None));
        for (year, month) in [(0, 1), (10_000, 1), (2026, 0), (2026, 13), (-1, 6)] {
            assert_eq!(Date::last_of(year, month), None, "{year}-{month}");
        }
        assert_eq!((day.add_days(i64::MAX), first.add_days(i64::MIN)), (None, None));
        assert_eq!(day.days_until(first), -count);
        assert_eq!(first.days_until(day), day.0.duration_since(first.0).as_secs() / 86_400);
    }

    #[test]
    fn day_arithmetic() {
        let d = |s| Date::parse(s).unwrap();
        assert_eq!(d("2026-06-01").days_until(d("2029-06-01")), 1096);
        assert_eq!(d("2029-06-01").days_until(d("2026-06-01")), -1096);
        assert_eq!(d("2028-02-28").add_days(1), Some(d("2028-02-29")));
        assert_eq!(d("2026-01-01").add_days(-1), Some(d("2025-12-31")));
        assert_eq!(d("9999-12-31").add_days(1), None);
        assert_eq!(d("0001-01-01").add_days(-1), None);
        assert_eq!(d("2026-02-14").last_of_month(), d("2026-02-28"));
    }

    #[test]
    fn timestamps_print_microseconds() {
        assert_eq!(Timestamp(1_795_000_000_123_456).to_rfc3339(), "2026-11-18T11:06:40.123456Z");
        assert_eq!(Timestamp::parse_rfc3339("2026-11-18T11:06:40.123456Z"), Some(Timestamp(1_795_000_000_123_456)));
        assert_eq!(Timestamp(1_795_000_000_123_456).date(), Some(Date::parse("2026-11-18").unwrap()));
        assert_eq!(Timestamp(-1).date(), Some(Date::parse("1969-12-31").unwrap()));
    }
}
